//! The HTTPS server's CORS layer (`https::Cors`) in front of a handler, driven without sockets.
//!
//! Input: a method byte, a flag byte (bit 0: the client asked for the bound name by SNI, else
//! for a name not served), then text: request header lines `name: value`, a line `--`, and the
//! header lines the handler answers with (a careless handler may set CORS headers itself).
//! Header lines that are not valid HTTP are skipped.
//!
//! Properties, from the request alone, not from the layer's code: `Vary: Origin` is on every
//! response; CORS headers appear exactly when the binding is served under that SNI name and
//! the request has one `Origin` field, equal byte for byte to the bound origin, and then they
//! are the policy's, never the handler's; a preflight is answered 204 or 403 by the layer,
//! never by the handler.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use localcert_device::https::{Cors, Sites};
use localcert_device::pki::SecretKey;
use localcert_device::store::Binding;
use localcert_proto::message::CorsPolicy;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use tower::Service;

const ORIGIN: &str = "https://vod.example.com";
const NAME: &str = "tv-fuzz.local";
const METHODS: &[&str] = &["GET", "OPTIONS", "POST", "PUT", "DELETE", "HEAD", "PATCH"];

/// Every header that grants a cross-origin read.
const CORS_HEADERS: &[HeaderName] = &[
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

fn policy() -> CorsPolicy {
    CorsPolicy {
        methods: vec!["GET".into(), "PUT".into()],
        allow_headers: vec!["content-type".into()],
        expose_headers: vec!["x-served-by".into()],
        allow_credentials: true,
        max_age: 600,
    }
}

/// The served table, with the key generated once per process.
fn sites() -> Arc<Sites> {
    static SITES: OnceLock<Arc<Sites>> = OnceLock::new();
    SITES
        .get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let leaf = rcgen::CertificateParams::new(vec![NAME.to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let sites = Sites::new();
            sites
                .apply(&Binding {
                    granted: 0,
                    star_ended: None,
                    origin: Origin::parse(ORIGIN).unwrap(),
                    name: LocalName::parse(NAME).unwrap(),
                    key: SecretKey::from_pkcs8_der(key.serialize_der()).into(),
                    chain: vec![leaf.der().to_vec()],
                    cors: policy(),
                    star_url: None,
                    user_handle_digest: [0; 32],
                    not_after: 0,
                })
                .unwrap();
            sites
        })
        .clone()
}

/// The valid header lines of `text`.
fn headers(text: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            map.append(name, value);
        }
    }
    map
}

pub(crate) fn cors(data: &[u8]) {
    let [method, flag, text @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let (request_text, answer_text) = text.split_once("\n--\n").unwrap_or((&text, ""));
    let method =
        Method::from_bytes(METHODS[usize::from(*method) % METHODS.len()].as_bytes()).unwrap();
    let request_headers = headers(request_text);
    let answer_headers = headers(answer_text);
    let served = flag & 1 == 1;

    let called = Arc::new(AtomicBool::new(false));
    let handler = {
        let called = called.clone();
        tower::service_fn(move |_: Request<()>| {
            called.store(true, Ordering::SeqCst);
            let mut response = Response::new(Empty::<Bytes>::new());
            *response.headers_mut() = answer_headers.clone();
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let name = if served { NAME } else { "tv-other.local" };
    let mut layer = Cors::new(handler, sites(), name);
    let mut request = Request::new(());
    *request.method_mut() = method.clone();
    *request.headers_mut() = request_headers.clone();
    let mut future = layer.call(request);
    // The handler is ready at once, so is the layer: one poll answers.
    let Poll::Ready(Ok(response)) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("the CORS layer did not answer at once");
    };

    let origins: Vec<&HeaderValue> = request_headers.get_all(header::ORIGIN).iter().collect();
    let allowed = served && origins.len() == 1 && origins[0].as_bytes() == ORIGIN.as_bytes();
    let preflight = method == Method::OPTIONS
        && !origins.is_empty()
        && request_headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let got = response.headers();

    let vary_origin = got.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("origin"))
        })
    });
    assert!(vary_origin, "no Vary: Origin in {got:?}");
    assert_eq!(
        called.load(Ordering::SeqCst),
        !preflight,
        "handler called for a preflight?"
    );
    if preflight {
        let status = if allowed {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(response.status(), status);
    }
    if !allowed {
        for name in CORS_HEADERS {
            assert!(
                !got.contains_key(name),
                "{name} without the bound origin: {got:?}"
            );
        }
        return;
    }
    let values = |name: &HeaderName| -> Vec<&[u8]> {
        got.get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    };
    let p = policy();
    assert_eq!(
        values(&header::ACCESS_CONTROL_ALLOW_ORIGIN),
        [ORIGIN.as_bytes()]
    );
    assert_eq!(values(&header::ACCESS_CONTROL_ALLOW_CREDENTIALS), [b"true"]);
    if preflight {
        assert_eq!(
            values(&header::ACCESS_CONTROL_ALLOW_METHODS),
            [p.methods.join(", ").as_bytes()]
        );
        assert_eq!(
            values(&header::ACCESS_CONTROL_ALLOW_HEADERS),
            [p.allow_headers.join(", ").as_bytes()]
        );
        assert_eq!(values(&header::ACCESS_CONTROL_MAX_AGE), [b"600"]);
        assert!(values(&header::ACCESS_CONTROL_EXPOSE_HEADERS).is_empty());
    } else {
        assert_eq!(
            values(&header::ACCESS_CONTROL_EXPOSE_HEADERS),
            [p.expose_headers.join(", ").as_bytes()]
        );
        for name in [
            &header::ACCESS_CONTROL_ALLOW_METHODS,
            &header::ACCESS_CONTROL_ALLOW_HEADERS,
            &header::ACCESS_CONTROL_MAX_AGE,
        ] {
            assert!(values(name).is_empty(), "{name} from the handler: {got:?}");
        }
    }
}
