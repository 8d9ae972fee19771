//! FHIR R4 (4.0.1) vocabulary the connectors need: the list of resource type names.

/// All FHIR R4 (4.0.1) resource type names, sorted (byte order) for binary search.
pub const RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// Whether `name` is a FHIR R4 resource type name (case-sensitive).
pub fn is_resource_type(name: &str) -> bool {
    RESOURCE_TYPES.binary_search(&name).is_ok()
}

/// Whether `id` is a valid FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses a `Type/id` reference (optionally preceded by a base URL, optionally followed by
/// `/_history/vid`) into its resource type and id. Returns `None` for anything else (searches, conditional
/// references, unknown types, invalid ids).
pub fn parse_type_id(reference: &str) -> Option<(&str, &str)> {
    let mut parts: Vec<&str> = reference.split('/').collect();
    if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
        parts.truncate(parts.len() - 2);
    }
    let [.., ty, id] = parts.as_slice() else {
        return None;
    };
    (is_resource_type(ty) && is_valid_id(id)).then_some((*ty, *id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_types_are_sorted_and_complete() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(RESOURCE_TYPES.len(), 146);
        for t in [
            "Account",
            "Bundle",
            "Parameters",
            "Binary",
            "Patient",
            "VisionPrescription",
        ] {
            assert!(is_resource_type(t), "{t}");
        }
        for t in ["DomainResource", "Resource", "patient", "", "Foo"] {
            assert!(!is_resource_type(t), "{t}");
        }
    }

    #[test]
    fn type_id_parsing() {
        assert_eq!(parse_type_id("Patient/123"), Some(("Patient", "123")));
        assert_eq!(
            parse_type_id("http://x.org/fhir/Patient/a-b.c/_history/2"),
            Some(("Patient", "a-b.c"))
        );
        assert_eq!(parse_type_id("Patient?identifier=x"), None);
        assert_eq!(parse_type_id("Foo/1"), None);
        assert_eq!(parse_type_id("Patient/"), None);
        assert_eq!(parse_type_id("123"), None);
    }
}
