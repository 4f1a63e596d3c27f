//! `.dockerignore`: which files of a build context are left out, decided as Docker decides it
//! (moby's `patternmatcher`, which `docker build` applies before sending a context).
//!
//! Each line is trimmed; blank lines and lines starting with `#` are skipped; `!` makes an
//! exception. A pattern is cleaned like a path (`./a//b/` is `a/b`) and a leading `/` dropped,
//! so patterns are anchored at the context root (unlike `.gitignore`). It matches a path when
//! it matches the path itself or one of its parent directories (`node_modules` leaves out
//! everything under it); the last matching line decides. The glob: `*` and `?` stop at `/`,
//! `[...]` is a character class (`^` negates it), `\` escapes the next character, `**/` matches
//! any number of directories (none too), and a trailing `**` matches anything.

use std::fmt;

/// The rules of one ignore file.
#[derive(Debug, Clone, Default)]
pub(crate) struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// `!pattern`: re-includes what earlier lines left out.
    exception: bool,
    /// The pattern as cleaned (what moby compares directory names with).
    text: String,
    glob: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    AnyChar,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` at the end: anything.
    Everything,
    /// `**` (or `**/`) before more pattern: nothing, or anything ending with `/`.
    Directories,
}

/// A line of an ignore file Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError {
    /// 1-based line number.
    pub line: usize,
    pub why: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

impl IgnoreRules {
    /// Parses the text of an ignore file.
    pub fn parse(text: &str) -> Result<IgnoreRules, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            // A comment is a line starting with `#` before any trimming (`  #x` is a pattern).
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if pattern.is_empty() {
                return Err(PatternError {
                    line: line_no,
                    why: "a `!` without a pattern",
                });
            }
            let cleaned = clean(pattern);
            let anchored = match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => rest,
                _ => cleaned.as_str(),
            };
            let glob = compile(anchored).map_err(|why| PatternError { line: line_no, why })?;
            rules.push(Rule {
                exception,
                text: anchored.to_owned(),
                glob,
            });
        }
        Ok(IgnoreRules { rules })
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let path: Vec<char> = path.chars().collect();
        let mut excluded = false;
        for rule in &self.rules {
            // Only a rule that could change the answer is evaluated.
            if rule.exception != excluded {
                continue;
            }
            if matches_or_parent_matches(&rule.glob, &path) {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// Whether the excluded directory `dir` must still be walked: some exception's pattern
    /// starts with `dir/` (moby's rule when it builds a context: `secrets` with `!**/*.json`
    /// sends nothing under `secrets`, `secrets` with `!secrets/ok.json` walks it).
    pub fn walk_excluded_dir(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.rules
            .iter()
            .any(|r| r.exception && format!("{}/", r.text).starts_with(&prefix))
    }
}

/// `path` cleaned as Go's `filepath.Clean` cleans it: no empty or `.` segments, `..` resolved
/// lexically, no trailing `/`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

fn compile(pattern: &str) -> Result<Vec<Token>, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i == chars.len() {
                    Token::Everything
                } else {
                    Token::Directories
                });
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::AnyChar),
            '\\' => {
                let escaped = chars.get(i + 1).ok_or("a trailing `\\` escapes nothing")?;
                tokens.push(Token::Literal(*escaped));
                i += 1;
            }
            '[' => {
                let (class, next) = class(&chars, i + 1)?;
                tokens.push(class);
                i = next;
                continue;
            }
            c => tokens.push(Token::Literal(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// The class starting after a `[` at `start`; returns it and the index after its `]`.
fn class(chars: &[char], start: usize) -> Result<(Token, usize), &'static str> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    loop {
        let c = *chars.get(i).ok_or("a `[` without its `]`")?;
        if c == ']' && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        let low = member(chars, &mut i)?;
        let high = if chars.get(i) == Some(&'-') {
            i += 1;
            member(chars, &mut i)?
        } else {
            low
        };
        if high < low {
            return Err("a character range that runs backwards");
        }
        ranges.push((low, high));
    }
}

/// One (possibly escaped) character of a class at `*i`, moving past it. As in Go's
/// `filepath.Match`, an unescaped `-` or `]` is not a member (`[]a]`, `[-a]`, `[a-]` and `[]`
/// are refused).
fn member(chars: &[char], i: &mut usize) -> Result<char, &'static str> {
    let c = *chars.get(*i).ok_or("a `[` without its `]`")?;
    *i += 1;
    if c == '-' || c == ']' {
        return Err("a character class with a bare `-` or `]` (escape it with `\\`)");
    }
    if c != '\\' {
        return Ok(c);
    }
    let escaped = *chars.get(*i).ok_or("a `[` without its `]`")?;
    *i += 1;
    Ok(escaped)
}

/// Whether `glob` matches `path` or one of its parent directories.
fn matches_or_parent_matches(glob: &[Token], path: &[char]) -> bool {
    matches(glob, path)
        || path
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '/')
            .any(|(at, _)| matches(glob, &path[..at]))
}

/// Whether `glob` matches all of `text`: `can[i][j]` = `glob[i..]` matches `text[j..]`,
/// filled from the end (no backtracking, so no pattern is slow).
fn matches(glob: &[Token], text: &[char]) -> bool {
    let width = text.len() + 1;
    let mut can = vec![false; (glob.len() + 1) * width];
    can[glob.len() * width + text.len()] = true;
    for i in (0..glob.len()).rev() {
        let (row, next) = (i * width, (i + 1) * width);
        // Directories: whether some `/` at or after j is followed by a match of the rest.
        let mut slash_then_rest = false;
        for j in (0..=text.len()).rev() {
            let here = text.get(j).copied();
            let one = |ok: bool| ok && can[next + j + 1];
            can[row + j] = match &glob[i] {
                Token::Literal(c) => one(here == Some(*c)),
                Token::AnyChar => one(here.is_some_and(|c| c != '/')),
                Token::Class { negated, ranges } => one(here.is_some_and(|c| {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
                })),
                Token::Star => {
                    can[next + j] || (here.is_some_and(|c| c != '/') && can[row + j + 1])
                }
                Token::Everything => true,
                Token::Directories => {
                    if here == Some('/') && can[next + j + 1] {
                        slash_then_rest = true;
                    }
                    can[next + j] || slash_then_rest
                }
            };
        }
    }
    can[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).expect("parse")
    }

    #[test]
    fn patterns_are_anchored_and_cover_what_is_under_them() {
        let r = rules("node_modules\n*.log\n/build/\n./tmp//x\n");
        assert!(r.excludes("node_modules"));
        assert!(r.excludes("node_modules/a/b.js"));
        assert!(r.excludes("debug.log"));
        assert!(!r.excludes("src/debug.log"), "anchored at the root");
        assert!(r.excludes("build/out.o"));
        assert!(r.excludes("tmp/x/y"));
        assert!(!r.excludes("src/main.rs"));
        assert!(!r.excludes("node_modules_old"));
    }

    #[test]
    fn the_last_matching_line_decides() {
        let r = rules("*.md\n!README.md\nREADME*\n");
        assert!(r.excludes("CHANGES.md"));
        assert!(r.excludes("README.md"), "README* comes last");
        let r = rules("docs\n!docs/keep.txt\n");
        assert!(r.excludes("docs/drop.txt"));
        assert!(!r.excludes("docs/keep.txt"));
        assert!(r.walk_excluded_dir("docs"));
        // An exception not naming the directory does not open it (as `docker build`).
        let r = rules("secrets\n!**/*.json\n");
        assert!(r.excludes("secrets"));
        assert!(!r.walk_excluded_dir("secrets"));
    }

    #[test]
    fn double_stars_cross_directories() {
        let r = rules("**/*.pyc\nsecrets/**\n");
        assert!(r.excludes("a.pyc"));
        assert!(r.excludes("pkg/sub/a.pyc"));
        assert!(!r.excludes("pkg/a.py"));
        assert!(r.excludes("secrets/key"));
        assert!(r.excludes("secrets/deep/key"));
        let r = rules("a/**/z\n");
        assert!(r.excludes("a/z"));
        assert!(r.excludes("a/b/c/z"));
        assert!(!r.excludes("b/z"));
    }

    #[test]
    fn stars_question_marks_and_classes_stop_at_slashes() {
        let r = rules("src/*.tmp\nf?le\n[abc]x\n[^0-9]y\n\\*lit\n");
        assert!(r.excludes("src/a.tmp"));
        assert!(!r.excludes("src/sub/a.tmp"));
        assert!(r.excludes("file") && !r.excludes("fle"));
        assert!(!r.excludes("f/le"));
        assert!(r.excludes("bx") && !r.excludes("dx"));
        assert!(r.excludes("ay") && !r.excludes("7y"));
        assert!(r.excludes("*lit") && !r.excludes("xlit"));
    }

    #[test]
    fn comments_blanks_and_a_byte_order_mark_are_skipped() {
        let r = rules("\u{feff}# comment\n\n   \n  spaced  \n  #kept\n");
        assert!(r.excludes("spaced"));
        assert!(!r.excludes("# comment"));
        assert!(r.excludes("#kept"), "a `#` after spaces starts a pattern");
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, line, why) in [
            ("ok\n!\n", 2, "without a pattern"),
            ("[abc\n", 1, "without its `]`"),
            ("a\nb\n[z-a]\n", 3, "backwards"),
            ("x\\", 1, "escapes nothing"),
            ("[]a]\n", 1, "bare `-` or `]`"),
            ("[-a]\n", 1, "bare `-` or `]`"),
            ("[a-]\n", 1, "bare `-` or `]`"),
            ("[]\n", 1, "bare `-` or `]`"),
        ] {
            let err = IgnoreRules::parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.to_string().contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn clean_follows_go() {
        assert_eq!(clean("./a//b/"), "a/b");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("./"), ".");
    }
}
