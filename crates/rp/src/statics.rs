//! A static directory served read-only (the example page and the built package). Only plain
//! path segments are accepted: no `..`, no `.`-files, no percent-encoding, no backslash; and
//! the resolved file must still be inside the directory (symlinks out of it are refused).

use std::path::{Path, PathBuf};

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;

/// The largest file served.
pub const MAX_STATIC_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The relative path a URL path names, if it is safe: plain segments only.
pub fn safe_relative(url_path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for segment in url_path.split('/').filter(|s| !s.is_empty()) {
        let plain = !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~@+".contains(&b));
        if !plain {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

/// Serves `url_path` from `dir`: a file, or a directory's `index.html` (a directory named
/// without its trailing slash is redirected, so relative links in the page resolve).
pub(crate) async fn serve(dir: &Path, url_path: &str) -> Response {
    let not_found = || ApiError::not_found(format!("no {url_path} here")).into_response();
    let Some(relative) = safe_relative(url_path) else {
        return not_found();
    };
    let Ok(root) = tokio::fs::canonicalize(dir).await else {
        return not_found();
    };
    let Ok(mut file) = tokio::fs::canonicalize(root.join(&relative)).await else {
        return not_found();
    };
    if !file.starts_with(&root) {
        return not_found();
    }
    let Ok(meta) = tokio::fs::metadata(&file).await else {
        return not_found();
    };
    if meta.is_dir() {
        if !url_path.ends_with('/') {
            let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("{url_path}/")) {
                response.headers_mut().insert("location", location);
            }
            return response;
        }
        file = file.join("index.html");
    }
    let Ok(meta) = tokio::fs::metadata(&file).await else {
        return not_found();
    };
    if !meta.is_file() || meta.len() > MAX_STATIC_FILE_BYTES {
        return not_found();
    }
    let Ok(bytes) = tokio::fs::read(&file).await else {
        return not_found();
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_segments() {
        assert_eq!(
            safe_relative("/example/index.html"),
            Some(PathBuf::from("example/index.html"))
        );
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        for bad in [
            "/../etc/passwd",
            "/example/../../x",
            "/%2e%2e/x",
            "/a\\b",
            "/.git/config",
            "/a/./b",
            "/a\0b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }
}
