//! Shell commands as a policy sees them: the top-level commands of a shell string and their
//! normalised forms, so `cd x && git -C y push` is caught by a rule on `git push*`.
//!
//! This is not a shell parser. It finds the places where a shell would start another command
//! (`&&`, `||`, `;`, `|`, a newline, a background `&`) outside quoting, and treats quoted text,
//! backticks and `$( … )` as opaque. When quoting is unterminated nothing is split: the shell
//! would refuse the string anyway, and guessing where a command starts could only hide one.

/// The top-level segments of `cmd`, trimmed, empty ones left out. Unterminated quoting (or an
/// unclosed backtick or `$(`) yields the whole string as its only segment.
pub fn split(cmd: &str) -> Vec<&str> {
    let b = cmd.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let sep_len = match b[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'\'' | b'"' | b'`' => match skip_quoted(b, i) {
                Some(next) => {
                    i = next;
                    continue;
                }
                None => return whole(cmd),
            },
            b'$' if b.get(i + 1) == Some(&b'(') => match skip_subst(b, i + 2) {
                Some(next) => {
                    i = next;
                    continue;
                }
                None => return whole(cmd),
            },
            b'&' if b.get(i + 1) == Some(&b'&') => 2,
            b'|' if b.get(i + 1) == Some(&b'|') => 2,
            // `|&` pipes stderr too; it is not a command boundary the rules care about.
            b'|' if b.get(i + 1) == Some(&b'&') => {
                i += 2;
                continue;
            }
            b'|' | b';' | b'\n' => 1,
            b'&' => {
                let prev = i.checked_sub(1).map(|p| b[p]);
                let next = b.get(i + 1).copied();
                // `&>`, `>&`, `<&`, `2>&1`: a redirection, not a background job.
                if matches!(prev, Some(b'>' | b'<' | b'|')) || next == Some(b'>') {
                    i += 1;
                    continue;
                }
                1
            }
            _ => {
                i += 1;
                continue;
            }
        };
        push(&mut out, &cmd[start..i]);
        i += sep_len;
        start = i;
    }
    push(&mut out, &cmd[start.min(cmd.len())..]);
    out
}

fn whole(cmd: &str) -> Vec<&str> {
    let t = cmd.trim();
    if t.is_empty() { Vec::new() } else { vec![t] }
}

fn push<'a>(out: &mut Vec<&'a str>, seg: &'a str) {
    let t = seg.trim();
    if !t.is_empty() {
        out.push(t);
    }
}

/// `b[i]` opens a quote (`'`, `"` or a backtick): the index after its closing one, or `None`.
fn skip_quoted(b: &[u8], i: usize) -> Option<usize> {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            // Single quotes have no escapes; double quotes and backticks do.
            b'\\' if q != b'\'' => j += 2,
            c if c == q => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Just after `$(`: the index after the matching `)`, or `None`.
fn skip_subst(b: &[u8], mut j: usize) -> Option<usize> {
    let mut depth = 1usize;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'\'' | b'"' | b'`' => j = skip_quoted(b, j)?,
            b'(' => {
                depth += 1;
                j += 1;
            }
            b')' => {
                depth -= 1;
                j += 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => j += 1,
        }
    }
    None
}

/// One command as rules match it: surrounding whitespace, leading `(`/`{`, trailing
/// `)`/`}`/`;`, leading `NAME=value` assignments and git's global options (`-C <path>`,
/// `--git-dir`, `--work-tree`, `-c <key=value>`, `--namespace`) removed.
pub fn normalise(segment: &str) -> String {
    let mut s = segment.trim();
    loop {
        let before = s.len();
        s = s.trim_start_matches(['(', '{']).trim_start();
        s = s.trim_end_matches([')', '}', ';']).trim_end();
        if s.len() == before {
            break;
        }
    }
    while let Some(rest) = strip_assignment(s) {
        s = rest;
    }
    fold_git_options(s)
}

/// `NAME=value rest` → `rest` (the value may be quoted); `None` when `s` does not start so.
fn strip_assignment(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let first = *b.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let mut i = 1;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    if b.get(i) != Some(&b'=') {
        return None;
    }
    let end = word_end(b, i + 1)?;
    // A bare assignment with nothing after it is the whole command.
    let rest = s[end..].trim_start();
    if rest.is_empty() { None } else { Some(rest) }
}

/// The end of the shell word starting at `i` (quotes included); `None` if a quote is unclosed.
fn word_end(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() && !b[i].is_ascii_whitespace() {
        match b[i] {
            b'\\' => i += 2,
            b'\'' | b'"' | b'`' => i = skip_quoted(b, i)?,
            _ => i += 1,
        }
    }
    Some(i.min(b.len()))
}

/// The next word of `s` and the rest after it.
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = word_end(s.as_bytes(), 0)?;
    Some((&s[..end], &s[end..]))
}

fn fold_git_options(s: &str) -> String {
    let Some(("git", mut rest)) = next_word(s) else {
        return s.to_string();
    };
    while let Some((w, after)) = next_word(rest) {
        rest = match w {
            "-C" | "-c" | "--git-dir" | "--work-tree" | "--namespace" => {
                next_word(after).map_or("", |(_, r)| r)
            }
            _ if ["--git-dir=", "--work-tree=", "--namespace="]
                .iter()
                .any(|p| w.starts_with(p)) =>
            {
                after
            }
            _ => break,
        };
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        "git".to_string()
    } else {
        format!("git {rest}")
    }
}

/// What `deny` and `ask` rules match a command against: the raw string, the normalised whole
/// string, and each normalised top-level segment, without repeats; and (beyond the reference)
/// the same for the script of a shell wrapper (`bash -lc '<script>'`, as Codex runs every
/// command), so a rule on `git push*` also sees through the wrapper.
pub fn effective_commands(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    collect(raw, &mut out, 0);
    out
}

fn collect(raw: &str, out: &mut Vec<String>, depth: usize) {
    let mut add = |c: String| {
        if !c.is_empty() && !out.contains(&c) {
            out.push(c);
        }
    };
    add(raw.to_string());
    add(normalise(raw));
    let segments = split(raw);
    for seg in &segments {
        add(normalise(seg));
    }
    if depth < 3 {
        for seg in segments {
            if let Some(script) = shell_script(&normalise(seg)) {
                collect(&script, out, depth + 1);
            }
        }
    }
}

/// The command an `allow` rule matches: the raw command, or the script of a command that is
/// nothing but a shell wrapper.
pub fn allow_candidate(raw: &str) -> String {
    shell_script(raw.trim()).unwrap_or_else(|| raw.to_string())
}

/// `sh|bash|zsh|dash [-l] -c|-lc|-ic <script>` (any path to the shell) → the script, unquoted;
/// `None` for anything else, including a wrapper with more after its script.
pub fn shell_script(cmd: &str) -> Option<String> {
    let (shell, mut rest) = next_word(cmd)?;
    let name = shell.rsplit('/').next().unwrap_or(shell);
    if !matches!(name, "sh" | "bash" | "zsh" | "dash") {
        return None;
    }
    loop {
        let (w, after) = next_word(rest)?;
        rest = after;
        match w {
            "-l" | "--login" | "-i" => continue,
            "-c" | "-lc" | "-cl" | "-ic" | "-ci" => break,
            _ => return None,
        }
    }
    let (script, after) = next_word(rest)?;
    if !after.trim().is_empty() {
        return None;
    }
    Some(unquote(script))
}

/// A shell word without its quoting (`'…'` verbatim, `"…"` with `\"`, `\\`, `\$` and `\``
/// unescaped, a bare `\x` as `x`).
fn unquote(word: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                            Some(n) => {
                                out.push('\\');
                                out.push(n);
                            }
                            None => out.push('\\'),
                        },
                        c => out.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_at_command_boundaries() {
        let cases: &[(&str, &[&str])] = &[
            ("git push", &["git push"]),
            ("cd x && git push", &["cd x", "git push"]),
            ("a || b; c | d\ne", &["a", "b", "c", "d", "e"]),
            ("make & git push", &["make", "git push"]),
            ("make 2>&1 | tee log", &["make 2>&1", "tee log"]),
            ("make &> log; ls", &["make &> log", "ls"]),
            ("make >&2 && ls", &["make >&2", "ls"]),
            ("make |& tee log", &["make |& tee log"]),
            ("echo 'a && b' && c", &["echo 'a && b'", "c"]),
            ("echo \"a; \\\"b\" ; c", &["echo \"a; \\\"b\"", "c"]),
            ("echo `a; b` ; c", &["echo `a; b`", "c"]),
            ("echo $(a; (b); c) && d", &["echo $(a; (b); c)", "d"]),
            ("echo a\\;b", &["echo a\\;b"]),
            (
                "echo 'unterminated && git push",
                &["echo 'unterminated && git push"],
            ),
            (
                "echo $(unclosed && git push",
                &["echo $(unclosed && git push"],
            ),
            (";;  ; ", &[]),
        ];
        for (cmd, want) in cases {
            assert_eq!(split(cmd), *want, "{cmd:?}");
        }
    }

    #[test]
    fn normalises_like_the_spec() {
        let cases = [
            ("git -C x push", "git push"),
            (
                "git --git-dir=.git --work-tree /w -c a=b --namespace n push origin",
                "git push origin",
            ),
            ("GIT_SSH=x FOO='a b' git push", "git push"),
            ("( git push )", "git push"),
            ("{ git push; }", "git push"),
            ("  ls  ", "ls"),
            ("A=1", "A=1"),
            ("gitx -C x", "gitx -C x"),
            ("git -C", "git"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn effective_commands_keep_the_raw_string_first() {
        assert_eq!(
            effective_commands("cd /w && git -C . push"),
            ["cd /w && git -C . push", "cd /w", "git push"]
        );
        assert_eq!(
            effective_commands("X=1 git -C . push"),
            ["X=1 git -C . push", "git push"]
        );
        assert_eq!(effective_commands("  "), ["  "]);
    }

    #[test]
    fn shell_wrappers_are_seen_through() {
        assert_eq!(
            shell_script("/bin/bash -lc 'git push origin'").as_deref(),
            Some("git push origin")
        );
        assert_eq!(
            shell_script("sh -c \"echo \\\"a\\\" && ls\"").as_deref(),
            Some("echo \"a\" && ls")
        );
        assert_eq!(shell_script("bash -l -c ls").as_deref(), Some("ls"));
        assert_eq!(shell_script("bash script.sh"), None);
        assert_eq!(shell_script("bash -c 'ls' extra"), None);
        assert_eq!(shell_script("python -c 'x'"), None);
        let effective = effective_commands("/bin/bash -lc 'cd x && git -C y push'");
        assert!(effective.contains(&"git push".to_string()), "{effective:?}");
        assert_eq!(allow_candidate("/bin/bash -lc 'touch a'"), "touch a");
        assert_eq!(allow_candidate("touch a"), "touch a");
    }

    /// A word that needs no quoting and holds no separator.
    fn plain_word() -> impl Strategy<Value = String> {
        "[a-z0-9_./-]{1,8}"
    }

    fn plain_command() -> impl Strategy<Value = String> {
        prop::collection::vec(plain_word(), 1..4).prop_map(|w| w.join(" "))
    }

    proptest! {
        #[test]
        fn never_panics_and_segments_come_from_the_input(s in ".{0,60}") {
            for seg in split(&s) {
                prop_assert!(s.contains(seg));
                prop_assert!(!seg.is_empty());
            }
            let _ = effective_commands(&s);
        }

        #[test]
        fn joined_commands_split_back(
            cmds in prop::collection::vec(plain_command(), 1..5),
            seps in prop::collection::vec(prop::sample::select(vec![" && ", " || ", "; ", " | ", "\n", " & "]), 4),
        ) {
            let mut joined = cmds[0].clone();
            for (i, c) in cmds.iter().enumerate().skip(1) {
                joined.push_str(seps[i - 1]);
                joined.push_str(c);
            }
            prop_assert_eq!(split(&joined), cmds.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn quoted_text_is_never_split(inner in "[^']{0,30}", a in plain_command()) {
            let cmd = format!("{a} '{inner}'");
            prop_assert_eq!(split(&cmd).len(), usize::from(!cmd.trim().is_empty()));
        }

        #[test]
        fn a_hidden_git_push_is_found(
            before in plain_command(),
            opts in prop::collection::vec(prop::sample::select(vec!["-C dir", "--git-dir=.git", "-c k=v", "--work-tree /w"]), 0..3),
            env in prop::option::of("[A-Z]{1,4}=[a-z]{0,3}"),
        ) {
            let cmd = format!("{before} && {}git {} push origin", env.map(|e| e + " ").unwrap_or_default(), opts.join(" "));
            prop_assert!(effective_commands(&cmd).contains(&"git push origin".to_string()), "{cmd}");
        }
    }
}
