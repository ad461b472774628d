//! HAProxy's configuration syntax: sections, and lines split into words.
//!
//! This knows nothing about what the directives mean (see `super::translate`): it cuts the text
//! into sections (`global`, `defaults`, `listen`, `frontend`, `backend`, and the ones galera-lb
//! ignores, such as `userlist` or `resolvers`), and each line into words the way HAProxy does —
//! blanks separate words, `#` starts a comment, `"..."` and `'...'` quote, a backslash escapes
//! the next character. Every line keeps its number for messages.
//!
//! It never fails and never panics: whatever the input, it returns sections; a line before the
//! first section header lands in a section of kind [`SectionKind::None`], and an unterminated
//! quote simply ends at the end of the line (the translator decides what is acceptable).

/// One non-empty configuration line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    /// The words, quotes and escapes resolved.
    pub words: Vec<String>,
    /// The line as written, trimmed, without its comment (for `# from FILE:LINE: ...`).
    pub text: String,
}

impl Line {
    /// The first word (the keyword).
    pub(crate) fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// The `i`th word, or "" when there are fewer.
    pub(crate) fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
}

/// What a section header says the section is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SectionKind {
    /// Lines before the first section header.
    None,
    Global,
    Defaults,
    Listen,
    Frontend,
    Backend,
    /// A section galera-lb has no use for (`userlist`, `peers`, `resolvers`, `mailers`, ...),
    /// by its keyword.
    Other(String),
}

/// A section header and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub kind: SectionKind,
    /// The name after the keyword (`listen galera` → `galera`); `None` for `global` and for
    /// unnamed `defaults`.
    pub name: Option<String>,
    /// The header line itself; for [`SectionKind::None`], a line numbered 0.
    pub header: Line,
    pub lines: Vec<Line>,
}

/// Keywords that start a section, and what they mean here.
const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "listen",
    "frontend",
    "backend",
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "crt-store",
    "traces",
    "log-forward",
    "acme",
];

/// Splits HAProxy configuration text into sections.
pub(crate) fn parse(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let (words, text) = split_words(raw);
        if words.is_empty() {
            continue;
        }
        let line = Line {
            number,
            words,
            text,
        };
        let keyword = line.keyword().to_ascii_lowercase();
        if SECTION_KEYWORDS.contains(&keyword.as_str()) {
            let kind = match keyword.as_str() {
                "global" => SectionKind::Global,
                "defaults" => SectionKind::Defaults,
                "listen" => SectionKind::Listen,
                "frontend" => SectionKind::Frontend,
                "backend" => SectionKind::Backend,
                other => SectionKind::Other(other.to_string()),
            };
            let name = line.words.get(1).cloned();
            sections.push(Section {
                kind,
                name,
                header: line,
                lines: Vec::new(),
            });
            continue;
        }
        if sections.is_empty() {
            sections.push(Section {
                kind: SectionKind::None,
                name: None,
                header: Line {
                    number: 0,
                    words: Vec::new(),
                    text: String::new(),
                },
                lines: Vec::new(),
            });
        }
        if let Some(section) = sections.last_mut() {
            section.lines.push(line);
        }
    }
    sections
}

/// One line's words (quotes and escapes resolved, comment dropped) and its text without the
/// comment, trimmed.
fn split_words(raw: &str) -> (Vec<String>, String) {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut end = raw.len();
    let mut chars = raw.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                in_word = true;
                if let Some((_, next)) = chars.next() {
                    word.push(match next {
                        't' => '\t',
                        'n' => '\n',
                        'r' => '\r',
                        other => other,
                    });
                }
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                in_word = true;
                quote = Some(c);
            }
            (None, '#') => {
                end = at;
                break;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let text = raw.get(..end).unwrap_or(raw).trim().to_string();
    (words, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line).0
    }

    #[test]
    fn words_follow_haproxy_quoting() {
        assert_eq!(
            words("  server n1 10.0.0.1:3306 check "),
            ["server", "n1", "10.0.0.1:3306", "check"]
        );
        assert_eq!(words("option httpchk # a comment"), ["option", "httpchk"]);
        assert_eq!(
            words(r#"option httpchk GET "/a b" 'c#d' e\ f"#),
            ["option", "httpchk", "GET", "/a b", "c#d", "e f"]
        );
        assert_eq!(
            words("description \"unterminated"),
            ["description", "unterminated"]
        );
        assert!(words("   # only a comment").is_empty());
        assert_eq!(words("a\\"), ["a"]);
        assert_eq!(split_words("bind :3306 # front").1, "bind :3306");
    }

    #[test]
    fn sections_and_line_numbers() {
        let text = "stray\nglobal\n  maxconn 10\n\ndefaults\n  mode tcp\nlisten galera\n  bind :3306\nuserlist u\n  user a\n";
        let sections = parse(text);
        let kinds: Vec<_> = sections.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                SectionKind::None,
                SectionKind::Global,
                SectionKind::Defaults,
                SectionKind::Listen,
                SectionKind::Other("userlist".into())
            ]
        );
        assert_eq!(sections[1].lines[0].number, 3);
        assert_eq!(sections[3].name.as_deref(), Some("galera"));
        assert_eq!(sections[3].header.number, 7);
        assert_eq!(sections[3].lines[0].text, "bind :3306");
        assert_eq!(sections[0].lines[0].number, 1);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet: Vec<char> = "ab \t\"'\\#\n:glob listen\u{e9}\u{0}\r".chars().collect();
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse(&text);
        }
    }
}
