//! The embedded quickstart sample: the complete 100-patient Synthea export from the SMART Bulk Data
//! reference server (38,483 resources, 19 types, 3 MB gzipped; Apache-2.0, see
//! `engine/sample/LICENSE` and `engine/sample/SOURCE.txt`). Compiled into the binary so that
//! `fhirlake quickstart` works on a machine with nothing but the binary.

use std::path::Path;

use crate::{Error, Result};

macro_rules! sample_files {
    ($($name:literal),* $(,)?) => {
        /// `(file name, gzipped NDJSON bytes)` of every sample file.
        pub const SAMPLE_FILES: &[(&str, &[u8])] = &[
            $(($name, include_bytes!(concat!("../sample/", $name)))),*
        ];
    };
}

sample_files!(
    "2.AllergyIntolerance.ndjson.gz",
    "4.CarePlan.ndjson.gz",
    "6.CareTeam.ndjson.gz",
    "8.Claim.ndjson.gz",
    "10.Condition.ndjson.gz",
    "12.Device.ndjson.gz",
    "14.DiagnosticReport.ndjson.gz",
    "16.DocumentReference.ndjson.gz",
    "18.Encounter.ndjson.gz",
    "20.ExplanationOfBenefit.ndjson.gz",
    "22.Group.ndjson.gz",
    "24.ImagingStudy.ndjson.gz",
    "26.Immunization.ndjson.gz",
    "28.MedicationRequest.ndjson.gz",
    "30.Observation.ndjson.gz",
    "32.Observation.ndjson.gz",
    "34.Organization.ndjson.gz",
    "36.Patient.ndjson.gz",
    "38.Practitioner.ndjson.gz",
    "40.Procedure.ndjson.gz",
);

/// Licence of the sample data.
pub const SAMPLE_LICENSE: &str = include_str!("../sample/LICENSE");
/// Provenance of the sample data.
pub const SAMPLE_SOURCE: &str = include_str!("../sample/SOURCE.txt");

/// Resources in the sample.
pub const SAMPLE_RESOURCES: u64 = 38_483;

/// Writes the sample files (and its licence and provenance) into `dir`.
pub fn extract_sample(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(path.display(), e))
    };
    for (name, bytes) in SAMPLE_FILES {
        write(name, bytes)?;
    }
    write("LICENSE", SAMPLE_LICENSE.as_bytes())?;
    write("SOURCE.txt", SAMPLE_SOURCE.as_bytes())?;
    Ok(())
}
