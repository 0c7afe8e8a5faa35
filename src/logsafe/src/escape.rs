//! Peer-controlled text made safe for one log line.

use std::fmt::{self, Write};

/// Bytes of escaped text [`esc`] writes before it cuts the rest off (then `…(N more bytes)`).
pub const MAX_BYTES: usize = 256;

/// `value` — anything `Display`: a `&str`, an error, `format_args!(…)` — as it may go into a log
/// record: every control character (newline, NUL, ESC, C1…), U+2028/U+2029, the bidi controls
/// (U+202A–U+202E, U+2066–U+2069, marks) and the other invisible format characters written as
/// `\u{…}` escapes, and cut off after [`MAX_BYTES`] with `…(N more bytes)`. Log it as a Display
/// field: `warn!(error = %esc(&e), "bad request")`. Nothing is allocated.
///
/// With the JSON log format the escapes are kept as text (`"\\u{a}"` in the JSON string): the
/// JSON encoder escapes only what JSON needs, so the record reads the same in both formats.
pub fn esc<T: fmt::Display>(value: T) -> Escaped<T> {
    Escaped {
        value,
        max: MAX_BYTES,
    }
}

/// See [`esc`].
pub struct Escaped<T> {
    value: T,
    max: usize,
}

impl<T> Escaped<T> {
    /// At most `max` bytes of escaped text instead of [`MAX_BYTES`].
    pub fn limit(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut clip = Clip {
            out: f,
            room: self.max,
            cut: 0,
        };
        write!(clip, "{}", self.value)?;
        let cut = clip.cut;
        if cut > 0 {
            write!(f, "…({cut} more bytes)")?;
        }
        Ok(())
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether `c` is written as an escape: it would break the line, reorder or hide what follows
/// it, or not show at all.
fn hidden(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f'..='\u{9f}'   // C0 (newline, NUL, ESC…), DEL, C1 (NEL…)
        | '\u{ad}'                           // soft hyphen
        | '\u{34f}'                          // combining grapheme joiner
        | '\u{61c}'                          // Arabic letter mark (bidi)
        | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers (blank)
        | '\u{17b4}' | '\u{17b5}'            // Khmer inherent vowels (blank)
        | '\u{180b}'..='\u{180f}'            // Mongolian selectors and vowel separator
        | '\u{200b}'..='\u{200f}'            // zero-width space/joiners, LRM, RLM
        | '\u{2028}'..='\u{202e}'            // line/paragraph separators, bidi embeddings/overrides
        | '\u{2060}'..='\u{206f}'            // word joiner, invisible operators, bidi isolates
        | '\u{feff}'                         // zero-width no-break space (BOM)
        | '\u{fff9}'..='\u{fffb}'            // interlinear annotation
        | '\u{e0000}'..='\u{e007f}'          // tags
    )
}

/// Length of `\u{…}` for `c`.
fn escaped_len(c: char) -> usize {
    let digits = (32 - (c as u32 | 1).leading_zeros()).div_ceil(4) as usize;
    4 + digits
}

/// Writes through to `out`, escaping, until `room` is used up; then counts what is left.
struct Clip<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    room: usize,
    /// Bytes not written.
    cut: usize,
}

impl Write for Clip<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut > 0 {
            self.cut += s.len();
            return Ok(());
        }
        // The plain run not written yet starts here.
        let mut run = 0;
        for (i, c) in s.char_indices() {
            let escape = hidden(c);
            let len = if escape { escaped_len(c) } else { c.len_utf8() };
            if len > self.room {
                self.out.write_str(&s[run..i])?;
                self.cut = s.len() - i;
                self.room = 0;
                return Ok(());
            }
            self.room -= len;
            if escape {
                self.out.write_str(&s[run..i])?;
                write!(self.out, "\\u{{{:x}}}", c as u32)?;
                run = i + c.len_utf8();
            }
        }
        self.out.write_str(&s[run..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        for s in [
            "hello North",
            "调度台 登录成功",
            "naïve café 👍🏽",
            "a\\u{a}b \"q\"",
        ] {
            assert_eq!(esc(s).to_string(), s);
        }
    }

    #[test]
    fn line_breaks_nul_and_bidi_controls_are_escaped() {
        let forged = "x\n2025-01-01T00:00:00Z  INFO pttbridge: forged\r\0\u{1b}[31m\u{202e}\u{2028}\u{2029}\u{2066}\u{2069}\u{85}\u{200b}\u{feff}\u{e0041}";
        let out = esc(forged).to_string();
        assert_eq!(
            out,
            "x\\u{a}2025-01-01T00:00:00Z  INFO pttbridge: forged\\u{d}\\u{0}\\u{1b}[31m\\u{202e}\\u{2028}\\u{2029}\\u{2066}\\u{2069}\\u{85}\\u{200b}\\u{feff}\\u{e0041}"
        );
        assert!(out.chars().all(|c| !hidden(c)), "{out:?}");
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn long_text_is_cut_with_how_much_was_left() {
        let long = "a".repeat(100_000);
        assert_eq!(
            esc(&long).to_string(),
            format!("{}…(99744 more bytes)", "a".repeat(256))
        );
        assert_eq!(
            esc(&long).limit(10).to_string(),
            "aaaaaaaaaa…(99990 more bytes)"
        );
        assert_eq!(
            esc("abc").limit(3).to_string(),
            "abc",
            "exactly the limit: no marker"
        );
        // Never half a character, and escapes count as what they take on the line.
        assert_eq!(esc("ab€").limit(4).to_string(), "ab…(3 more bytes)");
        assert_eq!(esc("a\n").limit(5).to_string(), "a…(1 more bytes)");
        assert_eq!(esc("a\n").limit(6).to_string(), "a\\u{a}");
    }

    #[test]
    fn any_display_value_is_escaped_and_cut_across_its_pieces() {
        #[derive(Debug)]
        struct Bad(String);
        impl fmt::Display for Bad {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "unknown method meeting.{}", self.0)
            }
        }
        let e = Bad("x\ny".into());
        assert_eq!(esc(&e).to_string(), "unknown method meeting.x\\u{a}y");
        assert_eq!(
            esc(format_args!("{}-{}", "a".repeat(8), "b\u{202e}".repeat(8)))
                .limit(10)
                .to_string(),
            "aaaaaaaa-b…(31 more bytes)"
        );
    }

    #[test]
    fn escaped_lengths() {
        for c in [
            '\0',
            '\n',
            '\u{1f}',
            '\u{85}',
            '\u{202e}',
            '\u{feff}',
            '\u{e0041}',
        ] {
            assert_eq!(
                escaped_len(c),
                format!("\\u{{{:x}}}", c as u32).len(),
                "{c:?}"
            );
        }
    }

    /// Both log formats keep a record on one line, and JSON carries the escapes as text.
    #[test]
    fn one_record_is_one_line_in_text_and_json() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let method = "x\n2025-01-01T00:00:00Z ERROR forged\u{0}\u{202e}";
        for json in [false, true] {
            let buf = Buf::default();
            let out = buf.clone();
            let builder = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || out.clone());
            let log = || tracing::warn!(method = %esc(method), "bad request: {}", esc(method));
            if json {
                tracing::subscriber::with_default(builder.json().finish(), log);
            } else {
                tracing::subscriber::with_default(builder.finish(), log);
            }
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(!text.contains(['\0', '\u{202e}']), "{text:?}");
            if json {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    v["fields"]["method"],
                    "x\\u{a}2025-01-01T00:00:00Z ERROR forged\\u{0}\\u{202e}"
                );
            } else {
                assert!(text.contains("method=x\\u{a}2025"), "{text}");
            }
        }
    }
}
