//! Text from the other side, made safe to print: a guest's error message,
//! its console or a helper's log shown on the host's terminal must not
//! move the cursor, recolour, retitle or rewrite what the user sees.

use std::fmt::Write;

/// `s` with every control character escaped and its length bounded:
/// `\n`, `\r`, `\t` and `\xNN` for the C0 controls and DEL, `\u{NN}` for
/// the C1 controls and the invisible format characters that reorder or
/// hide text (bidirectional overrides and isolates, zero-width marks).
/// At most `max` bytes; a string that was cut ends in `...`.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 8);
    // Where each character's text begins in `out`: a cut never splits one.
    let mut marks = Vec::new();
    for c in s.chars() {
        if out.len() > max {
            break;
        }
        marks.push(out.len());
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() || hides_text(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    if out.len() > max {
        let keep = max.saturating_sub(3);
        let cut = marks
            .iter()
            .rev()
            .find(|m| **m <= keep)
            .copied()
            .unwrap_or(0);
        out.truncate(cut);
        out.push_str(&"..."[..max.min(3)]);
    }
    out
}

/// Format characters that change how the text around them shows.
fn hides_text(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain text: ok", 100), "plain text: ok");
        assert_eq!(
            printable("a\x1b[2J\x1b]0;title\x07b\nc\rd\te\x7f", 100),
            "a\\x1b[2J\\x1b]0;title\\x07b\\nc\\rd\\te\\x7f"
        );
        assert_eq!(
            printable("x\u{9b}31m\u{202e}fdp.exe", 100),
            "x\\u{9b}31m\\u{202e}fdp.exe"
        );
        assert_eq!(printable("ünïcödé ✓", 100), "ünïcödé ✓");
    }

    #[test]
    fn length_is_bounded() {
        assert_eq!(printable("abcdef", 6), "abcdef");
        assert_eq!(printable("abcdefg", 6), "abc...");
        assert_eq!(printable(&"é".repeat(100), 9), "ééé...");
        // An escape is never cut in half.
        assert_eq!(printable("ab\x1bcdef", 7), "ab...");
        let long = "\x1b".repeat(10_000);
        assert!(printable(&long, 512).len() <= 512);
        assert_eq!(printable("", 0), "");
    }
}
