//! Making guest- and network-controlled text safe to print.
//!
//! Anything a plugin, a webhook caller or a provider wrote can carry terminal
//! escape sequences, fake newlines that forge log lines, or megabytes of
//! text. Everything that reaches a log or a terminal goes through here.

/// Escapes control characters (C0, DEL, C1 and the bidi overrides that can
/// reorder what a terminal shows) and truncates to `max_chars` characters,
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
        c if c.is_control() || is_bidi_control(c) => {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
        c => out.push(c),
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
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
    fn truncates_and_says_how_much() {
        let safe = for_log(&"x".repeat(10), 4);
        assert_eq!(safe, "xxxx…[6 more chars]");
    }
}
