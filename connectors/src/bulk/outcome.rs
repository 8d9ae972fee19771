//! FHIR `OperationOutcome` bodies: the text a user sees when a server reports an error, and whether
//! the server marked the error as transient (worth retrying).

use serde_json::Value;

/// Longest error body text kept (server pages can be large).
const MAX_TEXT: usize = 500;

/// An error body as read: the OperationOutcome's issue texts, or a note on what the body was.
#[derive(Debug, Clone)]
pub struct ErrorBody {
    /// `severity code: diagnostics / details.text` of each issue, joined by `; `.
    pub text: String,
    /// Whether the body was an OperationOutcome.
    pub is_outcome: bool,
    /// Whether an issue has code `transient` (or `throttled`, `timeout`, `lock-error`).
    pub transient: bool,
}

/// Reads an error response body.
pub fn read_error_body(body: &[u8]) -> ErrorBody {
    match serde_json::from_slice::<Value>(body) {
        Ok(doc) if doc.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") => {
            ErrorBody {
                text: outcome_text(&doc),
                is_outcome: true,
                transient: is_transient(&doc),
            }
        }
        _ => ErrorBody {
            text: if body.is_empty() {
                "empty body (not an OperationOutcome)".into()
            } else {
                format!("{} byte body that is not an OperationOutcome", body.len())
            },
            is_outcome: false,
            transient: false,
        },
    }
}

/// The issue texts of an OperationOutcome.
pub fn outcome_text(doc: &Value) -> String {
    let issues = doc
        .get("issue")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let texts: Vec<String> = issues
        .iter()
        .map(|issue| {
            let get = |key: &str| issue.get(key).and_then(Value::as_str).unwrap_or_default();
            let detail = issue
                .get("details")
                .and_then(|d| d.get("text"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let message = [get("diagnostics"), detail]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" / ");
            format!("{} {}: {}", get("severity"), get("code"), message)
        })
        .collect();
    let mut text = if texts.is_empty() {
        "OperationOutcome without issues".to_string()
    } else {
        texts.join("; ")
    };
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn is_transient(doc: &Value) -> bool {
    doc.get("issue")
        .and_then(Value::as_array)
        .is_some_and(|issues| {
            issues.iter().any(|issue| {
                matches!(
                    issue.get("code").and_then(Value::as_str),
                    Some("transient" | "throttled" | "timeout" | "lock-error")
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_outcomes_and_other_bodies() {
        let oo = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"try later"}]}"#;
        let body = read_error_body(oo);
        assert!(body.is_outcome && body.transient);
        assert_eq!(body.text, "error transient: try later");
        let body = read_error_body(b"<html>Bad Gateway</html>");
        assert!(!body.is_outcome && !body.transient);
        assert!(body.text.contains("not an OperationOutcome"));
    }
}
