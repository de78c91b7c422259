//! `fnmatchcase` patterns, as the reference's rules use them: `*` (any run, `/` and newlines
//! included), `?` (one character), `[seq]`, `[!seq]` (with `a-z` ranges); anything else,
//! including a `[` that never closes, is literal. Case-sensitive.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Star,
    Any,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
    Lit(char),
}

fn compile(pattern: &str) -> Vec<Token> {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::Any);
                i += 1;
            }
            '[' => match class(&p, i + 1) {
                Some((token, next)) => {
                    out.push(token);
                    i = next;
                }
                None => {
                    out.push(Token::Lit('['));
                    i += 1;
                }
            },
            c => {
                out.push(Token::Lit(c));
                i += 1;
            }
        }
    }
    out
}

/// A class starting just after `[`: the token and the index after its `]`.
fn class(p: &[char], mut j: usize) -> Option<(Token, usize)> {
    let negated = p.get(j) == Some(&'!');
    if negated {
        j += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    while j < p.len() {
        let c = p[j];
        if c == ']' && !first {
            return Some((Token::Class { negated, items }, j + 1));
        }
        first = false;
        if p.get(j + 1) == Some(&'-') && p.get(j + 2).is_some_and(|&e| e != ']') {
            items.push((c, p[j + 2]));
            j += 3;
        } else {
            items.push((c, c));
            j += 1;
        }
    }
    None
}

fn one(token: &Token, c: char) -> bool {
    match token {
        Token::Any => true,
        Token::Lit(l) => *l == c,
        Token::Class { negated, items } => {
            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
        Token::Star => false,
    }
}

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> bool {
    let tokens = compile(pattern);
    let s: Vec<char> = name.chars().collect();
    let (mut t, mut i) = (0, 0);
    // The last `*` seen and the input position it is currently taken to end at.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if t < tokens.len() && tokens[t] == Token::Star {
            star = Some((t, i));
            t += 1;
        } else if t < tokens.len() && one(&tokens[t], s[i]) {
            t += 1;
            i += 1;
        } else if let Some((st, si)) = star {
            t = st + 1;
            i = si + 1;
            star = Some((st, si + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn fnmatchcase_semantics() {
        for (pattern, name, want) in [
            ("git push*", "git push", true),
            ("git push*", "git push --force origin main", true),
            ("git push*", "git pushx", true),
            ("git push*", "git pull", false),
            ("git push*", "cd x && git push", false),
            ("*git push*", "cd x && git push", true),
            ("rm -rf *", "rm -rf /\nls", true),
            ("ls ?", "ls a", true),
            ("ls ?", "ls ab", false),
            ("[gh]it", "hit", true),
            ("[!gh]it", "hit", false),
            ("[!gh]it", "bit", true),
            ("[a-c]x", "bx", true),
            ("[]]x", "]x", true),
            ("[x", "[x", true),
            ("Git*", "git push", false),
            ("", "", true),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(matches(pattern, name), want, "{pattern:?} ~ {name:?}");
        }
    }
}
