//! Text that came from outside — request paths, refusal details that quote the request
//! (serde's messages quote the attacker's keys and values), errors — on its way to a log line,
//! an audit row or a problem document. [`bounded`] is the one gate all of them pass: a request
//! of up to 64 KiB cannot store or reflect more than [`MAX_UNTRUSTED_BYTES`] per field, nor
//! forge log lines or terminal escapes.

/// The most bytes of untrusted text kept per field, the truncation mark included.
pub const MAX_UNTRUSTED_BYTES: usize = 256;

/// Marks text cut at [`MAX_UNTRUSTED_BYTES`].
const CUT: char = '…';

/// Characters that would forge lines, control a terminal or reorder what a reader sees.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` with those characters escaped (`\n`, `\u{202e}`) and, if that is longer than
/// [`MAX_UNTRUSTED_BYTES`], cut on a character boundary and ended with `…` so that the whole
/// is at most that long. Idempotent: bounded text passes unchanged.
pub fn bounded(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_UNTRUSTED_BYTES));
    // Where to cut if the text turns out too long: the mark must fit after it.
    let mut cut_at = None;
    for c in text.chars() {
        let before = out.len();
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if cut_at.is_none() && out.len() > MAX_UNTRUSTED_BYTES - CUT.len_utf8() {
            cut_at = Some(before);
        }
        if out.len() > MAX_UNTRUSTED_BYTES {
            out.truncate(cut_at.unwrap_or(0));
            out.push(CUT);
            return out;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_passes_unchanged() {
        assert_eq!(bounded("unknown field `x`"), "unknown field `x`");
        assert_eq!(bounded(""), "");
        let exact = "a".repeat(MAX_UNTRUSTED_BYTES);
        assert_eq!(bounded(&exact), exact);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_marked() {
        for filler in ["a", "é", "€", "😀"] {
            let long = filler.repeat(10_000);
            let cut = bounded(&long);
            assert!(cut.len() <= MAX_UNTRUSTED_BYTES, "{filler}: {}", cut.len());
            assert!(
                cut.len() > MAX_UNTRUSTED_BYTES - 8,
                "{filler}: {}",
                cut.len()
            );
            assert!(cut.ends_with(CUT));
            assert!(
                cut.trim_end_matches(CUT)
                    .chars()
                    .all(|c| c.to_string() == filler)
            );
        }
    }

    #[test]
    fn line_breaks_escapes_and_bidi_controls_are_escaped() {
        let forged = "x\nINFO admin logged in\r\u{1b}[31m\u{202e}gpj.exe\u{0}";
        let safe = bounded(forged);
        assert!(!safe.chars().any(needs_escape), "{safe}");
        assert_eq!(
            safe,
            "x\\nINFO admin logged in\\r\\u{1b}[31m\\u{202e}gpj.exe\\u{0}"
        );
        // An escape near the end is never split: cut before it instead.
        let near_end = format!("{}\n\n\n", "a".repeat(MAX_UNTRUSTED_BYTES - 4));
        let cut = bounded(&near_end);
        assert!(cut.len() <= MAX_UNTRUSTED_BYTES);
        assert!(cut.trim_end_matches(CUT).ends_with(['a', 'n']));
    }

    #[test]
    fn bounding_twice_changes_nothing() {
        for text in [
            "plain".to_owned(),
            "\n".repeat(1000),
            "é".repeat(1000),
            format!("{}\u{1b}", "a".repeat(MAX_UNTRUSTED_BYTES - 3)),
        ] {
            let once = bounded(&text);
            assert_eq!(bounded(&once), once);
        }
    }
}
