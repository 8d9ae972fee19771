//! Command-line interface: clap definitions, `fhirlake.toml` defaults, exit codes, output.
//!
//! Precedence for every flag: command line > `FHIRLAKE_*` environment > `fhirlake.toml` > built-in
//! default. Exit codes: 0 success; 3 committed with some lines rejected; 2 failure (nothing
//! committed, or a usage error). A closed stdout (`| head`) is success.

/// `println!` that returns the I/O error instead of panicking (a closed pipe is not a crash).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod args;
mod config;
mod deid;
mod ingest;
mod progress;
mod pull;
mod purge;
mod query;
mod quickstart;
mod serve;
mod shell;
mod sync;
mod user;
mod view;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Exit code: committed with rejected lines.
pub const EXIT_REJECTS: u8 = 3;
/// Exit code: failed.
pub const EXIT_FAILED: u8 = 2;

/// fhirlake: FHIR data into a de-identified Delta Lake lakehouse, queried with SQL.
#[derive(Debug, Parser)]
#[command(name = "fhirlake", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    global: args::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest the embedded Synthea sample into a lake, print the summary and example queries.
    Quickstart(quickstart::QuickstartArgs),
    /// Ingest FHIR NDJSON / Bundle files, folders, globs, object-store URLs or Bulk Data landing folders.
    Ingest(ingest::IngestArgs),
    /// Download a FHIR Bulk Data export ($export) into a landing folder (resumable).
    Pull(pull::PullArgs),
    /// Incremental Bulk Data export into the lake: `_since` the last export's transactionTime.
    Sync(sync::SyncArgs),
    /// Run SQL over the lake.
    Sql(query::SqlArgs),
    /// List the lake's tables: rows, Delta version, files, size.
    Tables(query::TablesArgs),
    /// Show the Delta commit history of a table (e.g. `raw.observation`, `lake.runs`).
    History(query::HistoryArgs),
    /// De-identification tools for data stewards: check, preview, explain, risk, reidentify.
    #[command(subcommand)]
    Deid(deid::DeidCommand),
    /// SQL-on-FHIR views: run a ViewDefinition over files, run conformance tests, add / list /
    /// drop the views a lake maintains.
    #[command(subcommand)]
    View(view::ViewCommand),
    /// Serve the lake over Arrow Flight SQL (BI tools, notebooks): users, roles, TLS, audit.
    Serve(serve::ServeArgs),
    /// Manage the Flight SQL server's users: add (argon2-hashed password), list, remove.
    #[command(subcommand)]
    User(user::UserCommand),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let command = match config::apply_config_defaults(Cli::command()) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    cli.global.init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Quickstart(args) => quickstart::run(args, &cli.global).await,
            Command::Ingest(args) => ingest::run(args, &cli.global).await,
            Command::Pull(args) => pull::run(args, &cli.global).await,
            Command::Sync(args) => sync::run(args, &cli.global).await,
            Command::Sql(args) => query::sql(args).await,
            Command::Tables(args) => query::tables(args).await,
            Command::History(args) => query::history(args).await,
            Command::Deid(command) => deid::run(command).await,
            Command::View(command) => view::run(command).await,
            Command::Serve(args) => serve::run(args).await,
            Command::User(command) => user::run(command),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A closed pipe on stdout (`fhirlake sql ... | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<fhirlake_sql::Error>()
                .is_some_and(|e| matches!(e, fhirlake_sql::Error::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}
