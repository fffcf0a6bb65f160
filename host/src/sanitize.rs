//! Making guest- and network-controlled text safe to print.
//!
//! Anything a plugin, a webhook caller or a provider wrote can carry terminal
//! escape sequences, fake newlines that forge log lines, or megabytes of
//! text. Everything that reaches a log or a terminal goes through here.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Escapes control characters (C0, DEL, C1), every format character
/// (Unicode category Cf: bidi overrides and isolates, U+061C, zero-width
/// spaces and joiners, U+FEFF, …) and the line and paragraph separators
/// (Zl, Zp: U+2028, U+2029), which can reorder, hide or break what a
/// terminal or log viewer shows; truncates to `max_chars` characters,
/// marking the cut.
pub fn for_log(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for (taken, c) in text.chars().enumerate() {
        if taken == max_chars {
            let rest = text.chars().count() - taken;
            out.push_str(&format!("…[{rest} more chars]"));
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        c if c.is_control() || is_invisible(c) => {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
        c => out.push(c),
    }
}

/// Unicode categories Cf (format), Zl (line separator) and Zp (paragraph
/// separator), from the Unicode tables of `unicode-properties` (the crate
/// `stringprep` already brings in for PostgreSQL).
pub fn is_invisible(c: char) -> bool {
    !c.is_ascii()
        && matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// The bidirectional formatting characters (UAX #9): embeddings,
/// overrides, isolates and marks, including the Arabic letter mark. A
/// sender name carrying them can make a chat line read as something else.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

/// The longest line a plugin may write before it is cut.
pub const MAX_LOG_LINE_CHARS: usize = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_sequences_and_newlines() {
        let hostile = "ok\x1b[2J\x1b]0;pwned\x07\nFAKE LOG LINE\r\u{202e}";
        let safe = for_log(hostile, 100);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        assert_eq!(
            safe,
            "ok\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\nFAKE LOG LINE\\r\\u{202e}"
        );
    }

    #[test]
    fn escapes_every_format_and_separator_character() {
        for c in [
            '\u{2028}',
            '\u{2029}',
            '\u{061c}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{feff}',
            '\u{200e}',
            '\u{2066}',
            '\u{00ad}',
            '\u{e0001}',
        ] {
            let safe = for_log(&format!("a{c}b"), 100);
            assert_eq!(
                safe,
                format!("a\\u{{{:x}}}b", c as u32),
                "U+{:04X}",
                c as u32
            );
        }
        // Visible text, accents and emoji stay as they are.
        assert_eq!(for_log("Zoë 👋 日本", 100), "Zoë 👋 日本");
    }

    #[test]
    fn truncates_and_says_how_much() {
        let safe = for_log(&"x".repeat(10), 4);
        assert_eq!(safe, "xxxx…[6 more chars]");
    }
}
