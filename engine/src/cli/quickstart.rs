//! `fhirlake quickstart`: ingest the embedded Synthea sample into a lake, de-identified with the
//! `safe-harbor` profile, and show what SQL on it looks like. A local key file is created on the
//! first run (`./.fhirlake/deid.key`, mode 0600) unless a key is given.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use fhirlake::ingest::Ingest;
use fhirlake_deid::{DeidKey, PolicyEngine};
use fhirlake_sql::OutputFormat;

use super::args::{GlobalArgs, LakeArgs};
use super::deid::DeidOptions;
use super::ingest::{exit_code, print_summary};
use super::progress::CliObserver;

/// `fhirlake quickstart` flags.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    #[command(flatten)]
    pub lake: LakeArgs,

    /// Where the sample files are unpacked (and rejected lines would be kept).
    #[arg(
        long,
        env = "FHIRLAKE_LANDING",
        default_value = "./landing",
        value_name = "DIR"
    )]
    pub landing: std::path::PathBuf,

    #[command(flatten)]
    pub deid: DeidOptions,
}

/// Key file quickstart creates when no key is given.
pub const QUICKSTART_KEY_FILE: &str = ".fhirlake/deid.key";

/// The example queries, with a title each.
pub const EXAMPLE_QUERIES: &[(&str, &str)] = &[
    (
        "Patients by gender",
        "SELECT gender, count(*) AS patients FROM patient GROUP BY 1 ORDER BY patients DESC",
    ),
    (
        "Most common conditions (patients affected)",
        "SELECT code_display AS condition, count(DISTINCT patient_id) AS patients \
         FROM condition GROUP BY 1 ORDER BY patients DESC, condition LIMIT 5",
    ),
    (
        "Vital signs joined to patients: mean value by gender",
        "SELECT o.code_display AS observation, p.gender, count(*) AS n, \
                round(avg(o.value_quantity), 1) AS mean, o.value_unit AS unit \
         FROM observation o JOIN patient p ON o.patient_id = p.id \
         WHERE o.code IN ('8302-2', '29463-7', '39156-5') \
         GROUP BY 1, 2, 5 ORDER BY 1, 2",
    ),
];

/// Runs the quickstart.
pub async fn run(args: QuickstartArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let policy = args.deid.load_policy()?;
    let key = match (&args.deid.key_file, DeidKey::from_env()?) {
        (Some(_), _) => args.deid.load_key()?,
        (None, Some(key)) => key,
        (None, None) => {
            let path = std::path::Path::new(QUICKSTART_KEY_FILE);
            if path.exists() {
                DeidKey::from_file(path)?
            } else {
                let key = DeidKey::create_file(path)?;
                outln!(
                    "created a de-identification key in {} (mode 0600, key id {}); keep it: the \
                     same key keeps pseudonyms joinable across runs",
                    path.display(),
                    key.id()
                );
                key
            }
        }
    };
    let engine = PolicyEngine::new(policy, key);
    let lake = args.lake.open()?;
    let sample_dir = args.landing.join("quickstart-sample");
    fhirlake::sample::extract_sample(&sample_dir)?;
    outln!(
        "fhirlake quickstart: ingesting the embedded Synthea sample ({} resources, 100 patients) into {}",
        fhirlake::sample::SAMPLE_RESOURCES,
        lake.url()
    );
    outln!(
        "de-identified on the way in with policy {} (key id {})\n",
        fhirlake_deid::Deidentifier::policy_name(&engine),
        fhirlake_deid::Deidentifier::key_id(&engine)
    );
    let observer = Arc::new(CliObserver::new(global.quiet));
    let report = Ingest::new(
        vec![sample_dir.display().to_string()],
        lake.clone(),
        Arc::new(engine),
    )
    .with_landing(args.landing.clone())
    .with_observer(observer.clone())
    .run()
    .await;
    observer.finish();
    let report = report?;
    print_summary(&report, lake.url().as_str())?;

    let session = lake.session().await?;
    for (title, query) in EXAMPLE_QUERIES {
        outln!("\n-- {title}\n{query};");
        let stream = session.sql(query).await?.execute_stream().await?;
        let stdout = std::io::BufWriter::new(std::io::stdout());
        fhirlake_sql::write_stream(stream, OutputFormat::Table, stdout).await?;
    }
    outln!(
        "\nTry: fhirlake sql --lake {} \"SELECT count(*) AS n FROM raw.observation\"",
        args.lake.lake
    );
    Ok(exit_code(&report))
}
