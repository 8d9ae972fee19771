//! Table naming: where a table lives in the lake and what it is called in SQL.

use std::fmt;

use super::layout;

/// The three groups of tables in a lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableGroup {
    /// SQL-on-FHIR views: folder `views/`, SQL default schema.
    Views,
    /// De-identified resources: folder `raw/`, SQL schema `raw`.
    Raw,
    /// Lake bookkeeping (`runs`): folder `lake/`, SQL schema `lake`.
    Lake,
}

impl TableGroup {
    /// All groups, in listing order.
    pub const ALL: [TableGroup; 3] = [TableGroup::Views, TableGroup::Raw, TableGroup::Lake];

    /// Folder under the lake root.
    pub fn folder(self) -> &'static str {
        match self {
            TableGroup::Views => layout::FOLDER_VIEWS,
            TableGroup::Raw => layout::FOLDER_RAW,
            TableGroup::Lake => layout::FOLDER_LAKE,
        }
    }

    /// SQL schema name.
    pub fn sql_schema(self) -> &'static str {
        match self {
            TableGroup::Views => layout::SCHEMA_VIEWS,
            TableGroup::Raw => layout::SCHEMA_RAW,
            TableGroup::Lake => layout::SCHEMA_LAKE,
        }
    }
}

/// One table of the lake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    /// Its group.
    pub group: TableGroup,
    /// Lower snake case name, e.g. `medication_request`.
    pub name: String,
}

impl TableId {
    /// The raw table of a FHIR resource type (`MedicationRequest` -> `raw.medication_request`).
    pub fn raw(resource_type: &str) -> Self {
        Self {
            group: TableGroup::Raw,
            name: snake_case(resource_type),
        }
    }

    /// A SQL-on-FHIR view's table (`views/<name>`, SQL default schema).
    pub fn view(name: &str) -> Self {
        Self {
            group: TableGroup::Views,
            name: name.to_string(),
        }
    }

    /// The run log, `lake.runs`.
    pub fn runs() -> Self {
        Self {
            group: TableGroup::Lake,
            name: layout::TABLE_RUNS.to_string(),
        }
    }

    /// Path of the table folder relative to the lake root, e.g. `raw/observation`.
    pub fn relative_path(&self) -> String {
        format!("{}/{}", self.group.folder(), self.name)
    }

    /// Parses a SQL-style name: `raw.observation`, `lake.runs`, `patient` (a view).
    pub fn parse(name: &str) -> Option<Self> {
        let (group, table) = match name.split_once('.') {
            Some((layout::SCHEMA_RAW, t)) => (TableGroup::Raw, t),
            Some((layout::SCHEMA_LAKE, t)) => (TableGroup::Lake, t),
            Some((layout::SCHEMA_VIEWS | layout::FOLDER_VIEWS, t)) => (TableGroup::Views, t),
            Some(_) => return None,
            None => (TableGroup::Views, name),
        };
        let valid = !table.is_empty()
            && table
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        valid.then(|| Self {
            group,
            name: table.to_string(),
        })
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group {
            TableGroup::Views => write!(f, "{}", self.name),
            group => write!(f, "{}.{}", group.sql_schema(), self.name),
        }
    }
}

/// `MedicationRequest` -> `medication_request`, `ExplanationOfBenefit` -> `explanation_of_benefit`.
pub fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            TableId::raw("MedicationRequest").to_string(),
            "raw.medication_request"
        );
        assert_eq!(
            TableId::raw("ExplanationOfBenefit").relative_path(),
            "raw/explanation_of_benefit"
        );
        assert_eq!(TableId::runs().to_string(), "lake.runs");
        assert_eq!(
            TableId::parse("raw.observation"),
            Some(TableId::raw("Observation"))
        );
        assert_eq!(TableId::parse("patient").unwrap().group, TableGroup::Views);
        assert_eq!(TableId::parse("raw.Obs"), None);
        assert_eq!(TableId::parse("other.x"), None);
    }
}
