//! Splitting long text into ordered chat messages.
//!
//! BigBlueButton refuses a `message` over 500 characters. The server is
//! Java/Scala, where a string's length counts UTF-16 code units (an emoji is
//! two), so parts are measured the same way: a part that fits in UTF-16 fits
//! however the server counts.

/// The length of `text` as Java counts it.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Line breaks as one `\n`, so `\r\n` neither counts twice nor reaches the
/// chat as a stray carriage return.
pub fn normalize_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Splits `text` into parts of at most `max_units` UTF-16 code units each,
/// in order, cutting at the last whitespace that fits. A word longer than a
/// whole part is cut hard. Whitespace at a cut is dropped; nothing else is.
/// A text that fits is returned as it is.
pub fn split_text(text: &str, max_units: usize) -> Vec<String> {
    // A part must hold at least one character of any width.
    let max_units = max_units.max(2);
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        if utf16_len(rest) <= max_units {
            if !rest.trim().is_empty() {
                parts.push(rest.to_string());
            }
            return parts;
        }
        rest = rest.trim_start();
        if utf16_len(rest) <= max_units {
            continue;
        }
        // `limit`: the byte index where the longest fitting prefix ends.
        let mut units = 0;
        let mut limit = rest.len();
        for (i, c) in rest.char_indices() {
            if units + c.len_utf16() > max_units {
                limit = i;
                break;
            }
            units += c.len_utf16();
        }
        // Whitespace right after a full part is as good a cut as any.
        let window_end = limit + rest[limit..].chars().next().map_or(0, char::len_utf8);
        let cut = rest[..window_end]
            .char_indices()
            .rev()
            .find(|(i, c)| c.is_whitespace() && !rest[..*i].trim_end().is_empty());
        match cut {
            Some((i, c)) => {
                parts.push(rest[..i].trim_end().to_string());
                rest = rest[i + c.len_utf8()..].trim_start();
            }
            None => {
                parts.push(rest[..limit].to_string());
                rest = &rest[limit..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invariants(text: &str, parts: &[String], max: usize) {
        for p in parts {
            assert!(utf16_len(p) <= max, "part too long: {}", utf16_len(p));
            assert!(!p.trim().is_empty(), "empty part");
        }
        // Nothing but whitespace is lost, and the order is kept.
        let joined: String = parts.concat().split_whitespace().collect();
        let original: String = text.split_whitespace().collect();
        assert_eq!(joined, original);
    }

    #[test]
    fn short_text_is_one_part_verbatim() {
        assert_eq!(split_text("  hello  world ", 500), vec!["  hello  world "]);
        let exactly = "a".repeat(500);
        assert_eq!(split_text(&exactly, 500), vec![exactly.clone()]);
    }

    #[test]
    fn splits_at_word_boundaries_in_order() {
        let text = "alpha beta gamma delta epsilon";
        let parts = split_text(text, 11);
        assert_eq!(parts, vec!["alpha beta", "gamma delta", "epsilon"]);
        check_invariants(text, &parts, 11);
    }

    #[test]
    fn a_space_right_after_a_full_part_is_used() {
        let parts = split_text("abcde fghij", 5);
        assert_eq!(parts, vec!["abcde", "fghij"]);
    }

    #[test]
    fn long_words_are_cut_hard() {
        let text = format!("short {} tail", "x".repeat(1200));
        let parts = split_text(&text, 500);
        assert_eq!(parts[0], "short");
        assert_eq!(parts[1], "x".repeat(500));
        assert_eq!(parts[2], "x".repeat(500));
        assert_eq!(parts[3], format!("{} tail", "x".repeat(200)));
        check_invariants(&text, &parts, 500);
    }

    #[test]
    fn newlines_are_cut_points_too() {
        let text = format!("{}\n{}", "a".repeat(300), "b".repeat(300));
        let parts = split_text(&text, 500);
        assert_eq!(parts, vec!["a".repeat(300), "b".repeat(300)]);
    }

    #[test]
    fn counts_utf16_units_like_the_server() {
        // 300 emoji are 600 UTF-16 units: two parts even though 300 chars.
        let text = "😀".repeat(300);
        let parts = split_text(&text, 500);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].chars().count(), 250);
        check_invariants(&text, &parts, 500);
        // A surrogate pair is never cut in half.
        let text = format!("a{}", "😀".repeat(300));
        for p in split_text(&text, 500) {
            assert!(utf16_len(&p) <= 500);
        }
    }

    #[test]
    fn leading_whitespace_never_makes_an_empty_part() {
        let text = format!("{}{}", " ".repeat(600), "y".repeat(10));
        let parts = split_text(&text, 500);
        assert_eq!(parts, vec!["y".repeat(10)]);
    }

    #[test]
    fn a_long_realistic_text_keeps_every_word_in_order() {
        let words: Vec<String> = (0..2000).map(|i| format!("word{i}")).collect();
        let text = words.join(" ");
        let parts = split_text(&text, 500);
        check_invariants(&text, &parts, 500);
        let rejoined = parts.join(" ");
        assert_eq!(rejoined, text);
        assert!(
            parts
                .iter()
                .all(|p| !p.starts_with(' ') && !p.ends_with(' '))
        );
    }

    #[test]
    fn newline_normalisation() {
        assert_eq!(normalize_newlines("a\r\nb\rc\nd"), "a\nb\nc\nd");
    }
}
