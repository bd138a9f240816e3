//! Shell completion scripts (bash, zsh, fish), generated from the option
//! table like `--help` and the man page: an option added to `defs.rs`
//! completes everywhere without another edit.

use std::fmt::Write;

use super::defs::{self, Kind, OptDef};
use super::settings::Words;

/// The shells `--completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Words for Shell {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("bash", Shell::Bash),
        ("zsh", Shell::Zsh),
        ("fish", Shell::Fish),
    ];
}

/// What an option's value completes to.
enum Value {
    None,
    File,
    Dir,
    Words(Vec<&'static str>),
    Any,
}

fn value_of(o: &OptDef) -> Value {
    // A value that is optional comes after `=` (`--proxy-headers=forwarded`):
    // the next word is the command line's next, the app's file as often.
    if matches!(o.kind, Kind::Flag | Kind::FlagOrStr) {
        return Value::None;
    }
    match o.value_name {
        "FILE" | "PATH" | "PIDFILE" => Value::File,
        "DIR" => Value::Dir,
        v if v.contains('|') => Value::Words(v.split('|').collect()),
        _ => Value::Any,
    }
}

/// The help's first sentence, for the shells that show one.
fn summary(o: &OptDef) -> &'static str {
    let h = o.help;
    match h.find(". ") {
        Some(i) => &h[..i],
        None => h.trim_end_matches('.'),
    }
}

/// The script for `shell`.
pub fn completion_script(shell: Shell) -> String {
    match shell {
        Shell::Bash => bash(),
        Shell::Zsh => zsh(),
        Shell::Fish => fish(),
    }
}

fn bash() -> String {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut words = String::new();
    let mut all = Vec::new();
    for o in defs::OPTIONS {
        let names: Vec<String> = o.long_names().map(|n| format!("--{n}")).collect();
        match value_of(o) {
            Value::File => files.extend(names.iter().cloned()),
            Value::Dir => dirs.extend(names.iter().cloned()),
            Value::Words(w) => {
                let _ = writeln!(
                    words,
                    "        {}) COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")); return ;;",
                    names.join("|"),
                    w.join(" ")
                );
            }
            Value::None | Value::Any => {}
        }
        all.extend(names);
    }
    format!(
        "# bash completion for oxgate, generated from its option table\n\
         # (oxgate --completions bash). Source it, or put it in\n\
         # /usr/share/bash-completion/completions/oxgate.\n\
         _oxgate() {{\n    \
             local cur=\"${{COMP_WORDS[COMP_CWORD]}}\" prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"\n    \
             case \"$prev\" in\n\
         {words}        \
                 {files}) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n        \
                 {dirs}) COMPREPLY=($(compgen -d -- \"$cur\")); return ;;\n    \
             esac\n    \
             if [[ $cur == -* ]]; then\n        \
                 COMPREPLY=($(compgen -W \"{all}\" -- \"$cur\"))\n    \
             else\n        \
                 COMPREPLY=($(compgen -f -- \"$cur\"))\n    \
             fi\n\
         }}\n\
         complete -o filenames -F _oxgate oxgate\n",
        files = files.join("|"),
        dirs = dirs.join("|"),
        all = all.join(" "),
    )
}

/// zsh's `_arguments` spec text: `[`, `]`, `:` and quotes are special.
fn zsh_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\'', "'\\''")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .replace(':', "\\:")
}

fn zsh() -> String {
    let mut out = String::from(
        "#compdef oxgate\n\
         # zsh completion for oxgate, generated from its option table\n\
         # (oxgate --completions zsh). Put it in a directory of $fpath as _oxgate.\n\
         _arguments -S \\\n",
    );
    for o in defs::OPTIONS {
        let action = match value_of(o) {
            Value::None => String::new(),
            Value::File => ":file:_files".into(),
            Value::Dir => ":directory:_files -/".into(),
            Value::Words(w) => format!(":{}:({})", o.name, w.join(" ")),
            Value::Any => format!(":{}: ", zsh_escape(&o.value_name.to_lowercase())),
        };
        // Repeatable options may be given again.
        let repeat = if o.kind == Kind::List { "*" } else { "" };
        for n in o.long_names() {
            let _ = writeln!(
                out,
                "  '{repeat}--{n}[{}]{action}' \\",
                zsh_escape(summary(o))
            );
        }
    }
    out.push_str("  '*:file:_files'\n");
    out
}

fn fish_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn fish() -> String {
    let mut out = String::from(
        "# fish completion for oxgate, generated from its option table\n\
         # (oxgate --completions fish). Put it in ~/.config/fish/completions/oxgate.fish.\n",
    );
    for o in defs::OPTIONS {
        let value = match value_of(o) {
            Value::None => String::new(),
            Value::File => " -r -F".into(),
            Value::Dir => " -r -a '(__fish_complete_directories)'".into(),
            Value::Words(w) => format!(" -x -a '{}'", w.join(" ")),
            Value::Any => " -x".into(),
        };
        for n in o.long_names() {
            let _ = writeln!(
                out,
                "complete -c oxgate -l {n}{value} -d '{}'",
                fish_escape(summary(o))
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_completes_in_every_shell() {
        let (b, z, f) = (bash(), zsh(), fish());
        for o in defs::OPTIONS {
            for n in o.long_names() {
                assert!(b.contains(&format!("--{n}")), "bash: {n}");
                assert!(z.contains(&format!("--{n}[")), "zsh: {n}");
                assert!(f.contains(&format!(" -l {n}")), "fish: {n}");
            }
        }
        assert!(b.contains("--interface) COMPREPLY=($(compgen -W \"auto wsgi asgi asgi2\""));
        assert!(f.contains("complete -c oxgate -l interface -x -a 'auto wsgi asgi asgi2'"));
        assert!(
            z.contains("'--interface[The app'\\''s interface]:interface:(auto wsgi asgi asgi2)'")
        );
        assert!(z.contains("'*--mount["));
        assert_eq!(zsh_escape("a [b]: 'c'"), "a \\[b\\]\\: '\\''c'\\''");
    }
}
