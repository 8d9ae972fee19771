//! `fhirlake sql` without a query: the interactive SQL shell, and the script runner when stdin is
//! not a terminal (`fhirlake sql --lake L < script.sql`).
//!
//! Statements end with `;` and may span lines; lines starting with `.` (between statements) are
//! shell commands (`.help` lists them). A failing statement prints its error and the shell goes on;
//! a script exits with status 2 when any statement failed. The line editor is rustyline: history
//! (kept in a file), Ctrl-C clears the line or cancels the running query, Ctrl-D exits.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use datafusion::common::TableReference;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use fhirlake::lake::layout::SCHEMA_VIEWS as DEFAULT_SCHEMA;
use fhirlake_sql::{LakeSession, OutputFormat};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Editor, Helper};

use super::EXIT_FAILED;

/// Interactive shell settings (used when `fhirlake sql` gets no query).
#[derive(Debug, Args, Clone)]
pub struct ShellArgs {
    /// History file of the interactive shell; an empty value keeps no history. Default:
    /// $XDG_STATE_HOME/fhirlake/history, else ~/.fhirlake_history.
    #[arg(long, env = "FHIRLAKE_HISTORY", value_name = "FILE")]
    pub history: Option<PathBuf>,
}

const HELP: &str = "\
SQL statements end with `;` and may span several lines. Shell commands:
  .help                 this text
  .tables [SCHEMA]      tables of every schema (views in `public`, resources in `raw`, run log in `lake`)
  .views                the views (tables of the default schema)
  .schema TABLE         columns of a table, e.g. `.schema raw.patient`
  .format FORMAT        result format: table, csv, json or ndjson
  .timer on|off         print each statement's rows and run time
  .quit, .exit          leave (Ctrl-D too)
Ctrl-C clears the current input or cancels the running query. Functions: see docs/sql.md.";

const PROMPT: &str = "fhirlake> ";

/// Runs the shell over `session`: interactive when stdin is a terminal, else a script from stdin.
pub async fn run(
    session: LakeSession,
    format: OutputFormat,
    args: ShellArgs,
) -> anyhow::Result<ExitCode> {
    if format == OutputFormat::Parquet {
        bail!(
            "the shell prints results as table, csv, json or ndjson; parquet needs a single query"
        );
    }
    let interactive = std::io::stdin().is_terminal();
    let mut shell = Shell {
        session,
        format,
        timer: false,
        failed: false,
        interactive,
    };
    if interactive {
        shell.interactive(history_path(args.history)).await
    } else {
        shell.script().await
    }
}

/// Where the history is kept: the flag (empty: nowhere), else the XDG state folder, else ~.
fn history_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return (!path.as_os_str().is_empty()).then_some(path);
    }
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = non_empty("XDG_STATE_HOME") {
        return Some(PathBuf::from(state).join("fhirlake").join("history"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".fhirlake_history"))
}

/// One unit of input: an SQL statement (without its `;`) or a dot command line.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Sql(String),
    Command(String),
}

/// Collects lines into complete statements. The SQL tokenizer decides where a statement ends, so
/// a `;` inside a string literal, a quoted identifier or a comment does not end one.
#[derive(Debug, Default)]
struct StatementBuffer {
    pending: String,
}

impl StatementBuffer {
    /// Adds one line; returns the statements (and dot command) it completes.
    fn push_line(&mut self, line: &str) -> Vec<Input> {
        if self.pending.is_empty() && line.trim_start().starts_with('.') {
            return vec![Input::Command(line.trim().to_string())];
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        let (statements, rest) = split_statements(&self.pending);
        self.pending = rest;
        statements.into_iter().map(Input::Sql).collect()
    }

    /// The unterminated statement left at the end of a script, if any.
    fn finish(&mut self) -> Option<Input> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.trim().is_empty()).then(|| Input::Sql(rest.trim().to_string()))
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Splits `text` at the `;` tokens: the complete statements (trimmed, without `;`, empty ones
/// dropped) and the rest. The rest is empty when it holds only whitespace and comments; text the
/// tokenizer cannot read yet (an open string literal or comment) is all rest.
fn split_statements(text: &str) -> (Vec<String>, String) {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, text).tokenize_with_location() else {
        return (Vec::new(), text.to_string());
    };
    let offsets = LineOffsets::new(text);
    let (mut statements, mut start, mut rest_has_sql) = (Vec::new(), 0, false);
    for token in &tokens {
        match token.token {
            Token::SemiColon => {
                let end = offsets.byte_offset(token.span.start.line, token.span.start.column);
                let statement = text[start..end].trim();
                if rest_has_sql {
                    statements.push(statement.to_string());
                }
                start = end + 1;
                rest_has_sql = false;
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => rest_has_sql = true,
        }
    }
    let rest = if rest_has_sql {
        text[start..].trim_start().to_string()
    } else {
        String::new()
    };
    (statements, rest)
}

/// Byte offsets of the tokenizer's (line, column) locations (1-based, columns count characters).
struct LineOffsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, line_starts }
    }

    fn byte_offset(&self, line: u64, column: u64) -> usize {
        let start = usize::try_from(line.saturating_sub(1))
            .ok()
            .and_then(|l| self.line_starts.get(l).copied())
            .unwrap_or(self.text.len());
        let skip = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
        self.text[start..]
            .char_indices()
            .nth(skip)
            .map_or(self.text.len(), |(i, _)| start + i)
    }
}

/// Tells rustyline when the input is complete: a dot command, or statements ending in `;`.
struct SqlHelper;

impl Validator for SqlHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let mut buffer = StatementBuffer::default();
        for line in ctx.input().lines() {
            buffer.push_line(line);
        }
        Ok(if buffer.is_empty() {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for SqlHelper {
    type Candidate = String;
}

impl Hinter for SqlHelper {
    type Hint = String;
}

impl Highlighter for SqlHelper {}

impl Helper for SqlHelper {}

/// What the loop does after an input.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

struct Shell {
    session: LakeSession,
    format: OutputFormat,
    timer: bool,
    /// Some statement or command failed (a script then exits with status 2).
    failed: bool,
    interactive: bool,
}

impl Shell {
    async fn interactive(&mut self, history: Option<PathBuf>) -> anyhow::Result<ExitCode> {
        let mut editor: Editor<SqlHelper, FileHistory> = Editor::new()?;
        editor.set_helper(Some(SqlHelper));
        if let Some(path) = &history
            && path.exists()
            && let Err(e) = editor.load_history(path)
        {
            eprintln!(
                "warning: cannot read the history file {}: {e}",
                path.display()
            );
        }
        let mut history_warned = false;
        eprintln!("fhirlake SQL shell: statements end with `;`, `.help` lists the commands.");
        loop {
            let entry = tokio::task::block_in_place(|| editor.readline(PROMPT));
            let entry = match entry {
                Ok(entry) => entry,
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            if entry.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(entry.as_str());
            if let Some(path) = &history
                && let Err(e) = append_history(&mut editor, path)
                && !history_warned
            {
                eprintln!(
                    "warning: cannot write the history file {}: {e}",
                    path.display()
                );
                history_warned = true;
            }
            let mut buffer = StatementBuffer::default();
            let mut inputs = Vec::new();
            for line in entry.lines() {
                inputs.extend(buffer.push_line(line));
            }
            inputs.extend(buffer.finish());
            for input in inputs {
                if self.execute(input).await? == Flow::Quit {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn script(&mut self) -> anyhow::Result<ExitCode> {
        let mut lines = std::io::stdin().lock().lines();
        let mut buffer = StatementBuffer::default();
        while let Some(line) = tokio::task::block_in_place(|| lines.next()) {
            for input in buffer.push_line(&line?) {
                if self.execute(input).await? == Flow::Quit {
                    return Ok(self.exit_code());
                }
            }
        }
        if let Some(input) = buffer.finish() {
            self.execute(input).await?;
        }
        Ok(self.exit_code())
    }

    fn exit_code(&self) -> ExitCode {
        if self.failed {
            ExitCode::from(EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        }
    }

    /// Runs one input; errors are printed and remembered, except a closed stdout, which ends the
    /// shell (as success, like every command).
    async fn execute(&mut self, input: Input) -> anyhow::Result<Flow> {
        let result = match input {
            Input::Sql(sql) => self.run_sql(&sql).await.map(|()| Flow::Continue),
            Input::Command(line) => self.command(&line).await,
        };
        match result {
            Ok(flow) => Ok(flow),
            Err(e) if super::is_broken_pipe(&e) => Err(e),
            Err(e) => {
                eprintln!("error: {e:#}");
                self.failed = true;
                Ok(Flow::Continue)
            }
        }
    }

    /// Runs one statement and prints its result; Ctrl-C cancels it in the interactive shell.
    async fn run_sql(&self, sql: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let run = async {
            let stream = self.session.sql(sql).await?.execute_stream().await?;
            let stdout = std::io::BufWriter::new(std::io::stdout());
            anyhow::Ok(fhirlake_sql::write_stream(stream, self.format, stdout).await?)
        };
        let rows = if self.interactive {
            tokio::select! {
                rows = run => rows?,
                _ = tokio::signal::ctrl_c() => bail!("query cancelled"),
            }
        } else {
            run.await?
        };
        if self.timer {
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "{rows} row{} in {seconds:.3} s",
                if rows == 1 { "" } else { "s" }
            );
        }
        Ok(())
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<Flow> {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let no_args = |flow| {
            if args.is_empty() {
                Ok(flow)
            } else {
                bail!("{name} takes no argument")
            }
        };
        match name {
            ".help" => {
                let mut stdout = std::io::stdout();
                writeln!(stdout, "{HELP}")?;
                no_args(Flow::Continue)
            }
            ".quit" | ".exit" => no_args(Flow::Quit),
            ".tables" => {
                let filter = match args.as_slice() {
                    [] => String::new(),
                    [schema] => format!(" AND table_schema = {}", sql_literal(schema)),
                    _ => bail!(".tables takes at most one schema name"),
                };
                self.run_sql(&format!(
                    "SELECT table_schema AS schema, table_name AS name, table_type AS type \
                     FROM information_schema.tables \
                     WHERE table_schema <> 'information_schema'{filter} ORDER BY 1, 2"
                ))
                .await?;
                Ok(Flow::Continue)
            }
            ".views" => {
                self.run_sql(&format!(
                    "SELECT table_name AS view FROM information_schema.tables \
                     WHERE table_schema = {} ORDER BY 1",
                    sql_literal(DEFAULT_SCHEMA)
                ))
                .await?;
                no_args(Flow::Continue)
            }
            ".schema" => {
                let [table] = args.as_slice() else {
                    bail!(".schema takes one table name, e.g. `.schema raw.patient`");
                };
                self.describe(table).await?;
                Ok(Flow::Continue)
            }
            ".format" => {
                let [format] = args.as_slice() else {
                    bail!(".format takes one of table, csv, json, ndjson");
                };
                let format: OutputFormat = format.parse().map_err(anyhow::Error::msg)?;
                if format == OutputFormat::Parquet {
                    bail!(
                        "the shell cannot print parquet; run `fhirlake sql --format parquet QUERY > file`"
                    );
                }
                self.format = format;
                Ok(Flow::Continue)
            }
            ".timer" => {
                self.timer = match args.as_slice() {
                    ["on"] => true,
                    ["off"] => false,
                    _ => bail!(".timer takes on or off"),
                };
                Ok(Flow::Continue)
            }
            other => bail!("unknown command `{other}`; `.help` lists the commands"),
        }
    }

    /// `.schema TABLE`: the columns of a table, in order.
    async fn describe(&self, name: &str) -> anyhow::Result<()> {
        let reference = TableReference::parse_str(name);
        let exists = self
            .session
            .context()
            .table_exist(reference.clone())
            .unwrap_or(false);
        if !exists {
            bail!("no table `{name}`; `.tables` lists them");
        }
        let schema = reference.schema().unwrap_or(DEFAULT_SCHEMA);
        self.run_sql(&format!(
            "SELECT column_name AS column, data_type AS type, is_nullable AS nullable \
             FROM information_schema.columns \
             WHERE table_schema = {} AND table_name = {} ORDER BY ordinal_position",
            sql_literal(schema),
            sql_literal(reference.table())
        ))
        .await
    }
}

/// `text` as an SQL string literal.
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Appends the new history entries to `path`, creating its folder the first time.
fn append_history(editor: &mut Editor<SqlHelper, FileHistory>, path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    editor.append_history(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(text: &str) -> Input {
        Input::Sql(text.to_string())
    }

    #[test]
    fn statements_end_at_semicolons_outside_literals_and_comments() {
        let mut buffer = StatementBuffer::default();
        assert_eq!(buffer.push_line("SELECT 'a;b' AS \"x;y\" -- c;"), vec![]);
        assert_eq!(
            buffer.push_line("/* ; */ FROM t;"),
            vec![sql("SELECT 'a;b' AS \"x;y\" -- c;\n/* ; */ FROM t")]
        );
        assert!(buffer.is_empty());
        assert_eq!(
            buffer.push_line("SELECT 1; SELECT 'é;'; SELECT"),
            vec![sql("SELECT 1"), sql("SELECT 'é;'")]
        );
        assert!(!buffer.is_empty());
        assert_eq!(buffer.push_line("2;"), vec![sql("SELECT\n2")]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn open_literals_and_comments_wait_for_more_lines() {
        let mut buffer = StatementBuffer::default();
        assert_eq!(buffer.push_line("SELECT 'it''s;"), vec![]);
        assert_eq!(
            buffer.push_line("'; -- done"),
            vec![sql("SELECT 'it''s;\n'")]
        );
        assert!(buffer.is_empty(), "a trailing comment is not a statement");
        assert_eq!(buffer.push_line(";;"), vec![]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn dot_commands_only_between_statements() {
        let mut buffer = StatementBuffer::default();
        assert_eq!(
            buffer.push_line("  .tables raw "),
            vec![Input::Command(".tables raw".into())]
        );
        assert_eq!(buffer.push_line("SELECT"), vec![]);
        assert_eq!(buffer.push_line(".5;"), vec![sql("SELECT\n.5")]);
        assert_eq!(buffer.push_line("SELECT 1"), vec![]);
        assert_eq!(buffer.finish(), Some(sql("SELECT 1")));
    }

    #[test]
    fn history_path_precedence() {
        assert_eq!(
            history_path(Some(PathBuf::from("/tmp/h"))),
            Some(PathBuf::from("/tmp/h"))
        );
        assert_eq!(history_path(Some(PathBuf::new())), None);
    }
}
