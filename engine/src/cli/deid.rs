//! `fhirlake deid ...`: the data steward's tools (check, preview, explain, reidentify, policy show,
//! risk, keygen) and the policy/key options every writing command shares.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fhirlake_connectors::{SourceItem, StoreOptions, plan_sources, read_source_file};
use fhirlake_deid::policy::{BUILTIN, DEFAULT_PROFILE, builtin_text};
use fhirlake_deid::{
    DeidKey, Deidentifier, Disposition, Passthrough, Policy, PolicyEngine, coverage, risk,
};

use super::EXIT_FAILED;
use super::args::LakeArgs;

/// Policy and key flags shared by `ingest`, `quickstart` and the `deid` tools.
#[derive(Debug, Args, Clone)]
pub struct DeidOptions {
    /// De-identification policy: a built-in profile (`safe-harbor`, `limited-data-set`), a TOML
    /// policy file, or a Microsoft FHIR anonymizer JSON configuration.
    #[arg(long, env = "FHIRLAKE_POLICY", value_name = "P", default_value = DEFAULT_PROFILE)]
    pub policy: String,

    /// Key file (hex or base64, at least 32 bytes; must not be readable by group or others).
    /// The key can also come from FHIRLAKE_DEID_KEY. Create one with `fhirlake deid keygen FILE`.
    #[arg(long, env = "FHIRLAKE_DEID_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl DeidOptions {
    /// The policy, validated.
    pub fn load_policy(&self) -> anyhow::Result<Policy> {
        Ok(Policy::load(&self.policy)?)
    }

    /// The key: FHIRLAKE_DEID_KEY, else the key file. Never printed.
    pub fn load_key(&self) -> anyhow::Result<DeidKey> {
        if let Some(path) = &self.key_file {
            return Ok(DeidKey::from_file(path)?);
        }
        match DeidKey::from_env()? {
            Some(key) => Ok(key),
            None => bail!(
                "no de-identification key: set FHIRLAKE_DEID_KEY (hex or base64, 32+ bytes) or pass \
                 --key-file FILE (create one with `fhirlake deid keygen FILE`). Without a key nothing \
                 is written (for synthetic data only, --unsafe-no-deid writes resources as they are)"
            ),
        }
    }

    /// The policy engine.
    pub fn engine(&self) -> anyhow::Result<PolicyEngine> {
        let policy = self.load_policy()?;
        let key = self.load_key()?;
        Ok(PolicyEngine::new(policy, key))
    }

    /// The de-identification stage for a writing command.
    pub fn deidentifier(&self, unsafe_no_deid: bool) -> anyhow::Result<Arc<dyn Deidentifier>> {
        if unsafe_no_deid {
            return Ok(Arc::new(Passthrough));
        }
        Ok(Arc::new(self.engine()?))
    }
}

/// `fhirlake deid` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeidCommand {
    /// Validate a policy (TOML or anonymizer JSON): unknown methods, bad paths, missing parameters.
    Check(CheckArgs),
    /// Write de-identified NDJSON to stdout, to compare before and after.
    Preview(PreviewArgs),
    /// List, per JSON path, which rule fired and what it did (never the values).
    Explain(PreviewArgs),
    /// Decrypt values written by the `encrypt` method (needs the key).
    Reidentify(ReidentifyArgs),
    /// Built-in profiles.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// k-anonymity of the de-identified lake over quasi-identifiers.
    Risk(RiskArgs),
    /// Create a new random key file (mode 0600).
    Keygen(KeygenArgs),
    /// After a policy fix: re-apply the policy to the lake and delete the older table versions
    /// (irreversible; `--dry-run` counts first).
    Purge(super::purge::PurgeArgs),
}

/// `fhirlake deid policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print a built-in profile as TOML, to start your own policy from; with `--coverage`, what
    /// a policy does to every element of every R4 resource type.
    Show(ShowArgs),
    /// List the built-in profiles.
    List,
}

/// `fhirlake deid policy show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Built-in profile name; with `--coverage` also a policy file (TOML or anonymizer JSON).
    #[arg(default_value = DEFAULT_PROFILE, value_name = "NAME|FILE")]
    pub name: String,

    /// Instead of the policy text, its coverage: per resource type and element path, what the
    /// policy does (kept, changed, removed, resource dropped) and the rule that decides it
    /// (number, path, method); paths only a `[defaults]` entry decides are flagged DEFAULT.
    /// Worked out on generated instances with every element; needs no key, prints no values.
    #[arg(long)]
    pub coverage: bool,

    /// With `--coverage`: only these resource types (repeat the flag or separate by commas;
    /// default: all 146 R4 resource types).
    #[arg(
        long = "type",
        env = "FHIRLAKE_COVERAGE_TYPES",
        value_name = "TYPE",
        value_delimiter = ',',
        requires = "coverage"
    )]
    pub types: Vec<String>,

    /// Output of `--coverage`: `text` (a table and a summary line) or `json`.
    #[arg(long, env = "FHIRLAKE_COVERAGE_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

/// `fhirlake deid check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy file or built-in profile name.
    #[arg(value_name = "POLICY")]
    pub policy: String,
}

/// `fhirlake deid preview` / `explain`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// NDJSON / Bundle files, folders or globs.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,

    #[command(flatten)]
    pub deid: DeidOptions,
}

/// `fhirlake deid reidentify`.
#[derive(Debug, Args)]
pub struct ReidentifyArgs {
    /// Encrypted values; read from stdin, one per line, when none are given.
    #[arg(value_name = "VALUE", allow_hyphen_values = true)]
    pub values: Vec<String>,

    #[command(flatten)]
    pub deid: DeidOptions,
}

/// `fhirlake deid risk`.
#[derive(Debug, Args)]
pub struct RiskArgs {
    #[command(flatten)]
    pub lake: LakeArgs,

    /// Smallest acceptable equivalence class.
    #[arg(long, env = "FHIRLAKE_RISK_K", default_value_t = risk::DEFAULT_K)]
    pub k: usize,

    /// Quasi-identifiers, comma-separated (default: birth_year,gender,zip3,race,ethnicity).
    #[arg(long, env = "FHIRLAKE_RISK_QUASI", value_name = "A,B,C")]
    pub quasi: Option<String>,

    /// Output: `text` or `json`.
    #[arg(long, env = "FHIRLAKE_RISK_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

/// `fhirlake deid keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (refuses to overwrite).
    #[arg(value_name = "FILE")]
    pub path: PathBuf,
}

/// Runs a `deid` subcommand.
pub async fn run(command: DeidCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeidCommand::Check(args) => check(&args),
        DeidCommand::Preview(args) => preview(args, false).await,
        DeidCommand::Explain(args) => preview(args, true).await,
        DeidCommand::Reidentify(args) => reidentify(&args),
        DeidCommand::Policy(PolicyCommand::Show(args)) if args.coverage => policy_coverage(&args),
        DeidCommand::Policy(PolicyCommand::Show(ShowArgs { name, .. })) => {
            match builtin_text(&name) {
                Some(text) => {
                    std::io::stdout().write_all(text.as_bytes())?;
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!(
                    "no built-in profile `{name}` (built-ins: {})",
                    BUILTIN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        DeidCommand::Policy(PolicyCommand::List) => {
            for (name, _) in BUILTIN {
                let policy = Policy::builtin(name)?;
                outln!("{name}\t{} rules\thash {}", policy.rules.len(), policy.hash);
            }
            Ok(ExitCode::SUCCESS)
        }
        DeidCommand::Risk(args) => risk_report(args).await,
        DeidCommand::Purge(args) => super::purge::run(args).await,
        DeidCommand::Keygen(args) => {
            let key = DeidKey::create_file(&args.path)?;
            outln!(
                "wrote a new key to {} (mode 0600), key id {}. Keep it outside the lake; whoever \
                 holds it can link pseudonyms back to source ids.",
                args.path.display(),
                key.id()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fhirlake deid policy show --coverage`: the types are checked before the policy is read.
fn policy_coverage(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let mut types: Vec<&str> = Vec::new();
    for ty in args
        .types
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
    {
        if !fhirlake_fhir::types::is_resource_type(ty) {
            bail!(
                "--type {ty}: not an R4 resource type (types are case-sensitive: Patient, Observation, ...)"
            );
        }
        if !types.contains(&ty) {
            types.push(ty);
        }
    }
    let policy = Policy::load(&args.name)?;
    // The report shows what happens to each element, not the values, so any key does: a fixed
    // one, and the steward's key is not needed.
    let key = DeidKey::from_bytes(&[0x5a; 32], "coverage")?;
    let engine = PolicyEngine::new(policy, key);
    let report = coverage::report(&engine, &types);
    if args.format == "json" {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        std::io::stdout().write_all(report.render_table().as_bytes())?;
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    match Policy::load(&args.policy) {
        Ok(policy) => {
            let mut by_method: BTreeMap<&str, usize> = BTreeMap::new();
            for rule in &policy.rules {
                *by_method.entry(rule.method.name()).or_default() += 1;
            }
            let methods: Vec<String> = by_method.iter().map(|(m, n)| format!("{m} {n}")).collect();
            outln!(
                "ok: {} — {} rules ({}), policy hash {}{}",
                args.policy,
                policy.rules.len(),
                methods.join(", "),
                policy.hash,
                if policy.ms.is_some() {
                    "; Microsoft anonymizer configuration (keys in it are ignored: the lake key is used)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// One resource read from the inputs, or a problem with its position.
pub(super) enum Input {
    Resource(String, serde_json::Value),
    Problem(String),
}

/// Reads resources from the inputs on a blocking thread, in order.
pub(super) async fn read_inputs(
    inputs: Vec<String>,
    mut each: impl FnMut(Input) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let plan = plan_sources(&inputs, &StoreOptions::default()).await;
    for problem in &plan.problems {
        each(Input::Problem(problem.to_string()))?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Input>(256);
    let handle = tokio::runtime::Handle::current();
    let reader = tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        for file in &plan.files {
            let mut emit = |item: SourceItem| -> bool {
                let input = match item {
                    SourceItem::Line { pos, bytes } => match serde_json::from_slice(&bytes) {
                        Ok(v) => Input::Resource(format!("{}:{}", pos.file, pos.line), v),
                        Err(e) => Input::Problem(format!(
                            "{}:{}: malformed JSON (column {})",
                            pos.file,
                            pos.line,
                            e.column()
                        )),
                    },
                    SourceItem::Resource { pos, resource } => Input::Resource(
                        format!(
                            "{}{}",
                            pos.file,
                            pos.path.map(|p| format!(" {p}")).unwrap_or_default()
                        ),
                        resource,
                    ),
                    SourceItem::Delete { .. } => return true,
                    SourceItem::Reject { pos, reason, .. } => {
                        Input::Problem(format!("{}:{}: {reason}", pos.file, pos.line))
                    }
                };
                tx.blocking_send(input).is_ok()
            };
            if let Err(e) = read_source_file(file, &mut emit) {
                let _ = tx.blocking_send(Input::Problem(e.to_string()));
            }
        }
    });
    while let Some(input) = rx.recv().await {
        each(input)?;
    }
    reader.await.context("input reader")?;
    Ok(())
}

async fn preview(args: PreviewArgs, explain: bool) -> anyhow::Result<ExitCode> {
    let engine = args.deid.engine()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut problems = 0u64;
    let mut dropped = 0u64;
    // Explain: (element path, rule, method, outcome) -> count.
    let mut table: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    let named_urls = coverage::named_urls(engine.policy());
    read_inputs(args.inputs, |input| {
        match input {
            Input::Problem(message) => {
                problems += 1;
                eprintln!("warning: {message}");
            }
            Input::Resource(at, mut resource) => {
                let result = if explain {
                    // Element paths name nested resource types and the extensions the policy
                    // names, as the original resource has them.
                    let original = resource.clone();
                    let (result, entries) = engine.explain(&mut resource);
                    for e in entries {
                        let path = coverage::element_path(&original, &e.path, &named_urls);
                        let rule = match e.rule {
                            Some(i) => format!("#{} {}", i + 1, e.rule_path),
                            None => e.rule_path,
                        };
                        *table.entry((path, rule, e.method, e.outcome)).or_default() += 1;
                    }
                    result
                } else {
                    engine.deidentify(&mut resource)
                };
                match result {
                    Ok(Disposition::Keep) => {
                        if !explain {
                            // Serialize first: a closed pipe must surface as an io::Error.
                            let mut line = serde_json::to_vec(&resource)?;
                            line.push(b'\n');
                            out.write_all(&line)?;
                        }
                    }
                    Ok(Disposition::Drop { reason }) => {
                        dropped += 1;
                        eprintln!("dropped: {at}: {reason}");
                    }
                    Err(e) => {
                        problems += 1;
                        eprintln!("error: {at}: {e}");
                    }
                }
            }
        }
        Ok(())
    })
    .await?;
    if explain {
        writeln!(
            out,
            "{:<60} {:<8} {:<12} {:<70}",
            "path", "values", "outcome", "rule"
        )?;
        for ((path, rule, method, outcome), n) in &table {
            let rule = if method == "default" {
                rule.clone()
            } else {
                format!("{rule} ({method})")
            };
            writeln!(out, "{path:<60} {n:<8} {outcome:<12} {rule}")?;
        }
    }
    out.flush()?;
    let stats = engine.stats();
    eprintln!(
        "{} resources, {} dropped, {} problems; policy {} ({}), key id {}",
        stats.resources,
        dropped,
        problems,
        engine.policy().name,
        engine.policy().hash,
        engine.key().id()
    );
    Ok(if problems > 0 {
        ExitCode::from(super::EXIT_REJECTS)
    } else {
        ExitCode::SUCCESS
    })
}

fn reidentify(args: &ReidentifyArgs) -> anyhow::Result<ExitCode> {
    let key = args.deid.load_key()?;
    let mut failed = 0;
    let mut one = |token: &str| -> anyhow::Result<()> {
        match fhirlake_deid::methods::crypt::decrypt(&key, token) {
            Some(plain) => outln!("{plain}"),
            None => {
                failed += 1;
                eprintln!(
                    "error: a value was not encrypted with this key (key id {})",
                    key.id()
                );
            }
        }
        Ok(())
    };
    if args.values.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if !line.trim().is_empty() {
                one(line.trim())?;
            }
        }
    } else {
        for v in &args.values {
            one(v)?;
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn risk_report(args: RiskArgs) -> anyhow::Result<ExitCode> {
    let attributes = match &args.quasi {
        Some(list) => risk::parse_quasi_identifiers(list)?,
        None => risk::DEFAULT_QUASI_IDENTIFIERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    let lake = args.lake.open()?;
    let report = fhirlake::lake::risk::risk_report(&lake, &attributes, args.k).await?;
    if args.format == "json" {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let text = report.render_text();
        std::io::stdout().write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            outln!();
        }
    }
    Ok(ExitCode::SUCCESS)
}
