//! Config errors that say where and what: `keys.toml:12:9`, the line, a hint.
//!
//! The toml crate's own error display quotes the source line, which could
//! hold an `[authority]` value; these are rendered here instead, and lines of
//! the `[authority]` table are never shown.

use std::fmt::Write as _;
use std::ops::Range;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about keys.toml, with the byte span it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Option<Range<usize>>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(span, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A 1-based line and column (in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

/// Lines (1-based) that belong to the `[authority]` table, whose values must
/// never be echoed. Found textually so it works even when parsing failed.
fn authority_lines(source: &str) -> Vec<bool> {
    let mut inside = false;
    let mut sensitive = vec![false]; // line 0 unused
    for line in source.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            let header = trimmed
                .trim_start_matches('[')
                .trim_start()
                .trim_start_matches('"');
            inside = header.starts_with("authority");
        }
        let root_key = !inside && trimmed.starts_with("authority");
        sensitive.push(inside || root_key);
    }
    sensitive
}

/// Renders findings as `error: FILE:LINE:COL: message`, the line with a caret
/// under the span (unless the line is in `[authority]`), and `hint:` lines.
pub fn render(file: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let sensitive = authority_lines(source);
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for d in diagnostics {
        let label = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &d.span {
            Some(span) => {
                let (line, column) = line_column(source, span.start);
                let _ = writeln!(out, "{label}: {file}:{line}:{column}: {}", d.message);
                let shown = lines
                    .get(line - 1)
                    .filter(|_| !sensitive.get(line).copied().unwrap_or(true));
                if let Some(text) = shown {
                    let width = source[span.clone()]
                        .lines()
                        .next()
                        .map_or(1, |s| s.chars().count().max(1));
                    let gutter = line.to_string().len();
                    let _ = writeln!(out, "{:gutter$} |", "");
                    let _ = writeln!(out, "{line} | {text}");
                    let _ = writeln!(
                        out,
                        "{:gutter$} | {}{}",
                        "",
                        " ".repeat(column - 1),
                        "^".repeat(width)
                    );
                }
            }
            None => {
                let _ = writeln!(out, "{label}: {file}: {}", d.message);
            }
        }
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "  hint: {hint}");
        }
    }
    out
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_characters() {
        let s = "a = 1\nbé = 2\n";
        assert_eq!(line_column(s, 0), (1, 1));
        assert_eq!(line_column(s, 6), (2, 1));
        assert_eq!(line_column(s, s.find('=').unwrap()), (1, 3));
        assert_eq!(line_column(s, s.rfind('=').unwrap()), (2, 4));
    }

    #[test]
    fn authority_lines_are_never_shown() {
        let s = "[authority]\nurl = \"ftp://secret\"\n[store]\nkind = 1\n";
        let span = s.find("ftp").unwrap()..s.find("ftp").unwrap() + 3;
        let out = render("k.toml", s, &[Diagnostic::error(Some(span), "bad url")]);
        assert_eq!(out, "error: k.toml:2:8: bad url\n");
        let span = s.rfind('1').unwrap()..s.rfind('1').unwrap() + 1;
        let out = render("k.toml", s, &[Diagnostic::error(Some(span), "bad kind")]);
        assert!(out.contains("4 | kind = 1"), "{out}");
    }

    #[test]
    fn suggests_close_names_only() {
        let fields = ["consumers", "description", "rotation"];
        assert_eq!(did_you_mean("consumer", fields), Some("consumers"));
        assert_eq!(did_you_mean("rotaton", fields), Some("rotation"));
        assert_eq!(did_you_mean("zzz", fields), None);
    }
}
