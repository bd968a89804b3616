//! The data-element standards a schema field can name, and a rule broken by a value.
use super::codes;

/// The data-element standard a field follows, named in its schema by `govbus.element`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// Citizen ID number, GB 11643.
    CitizenIdNumber,
    /// ID document type code.
    IdDocumentType,
    /// ID document number, checked by GB 11643 when the sibling `id_type` is the resident ID card.
    IdDocumentNumber,
    /// Unified social credit code, GB 32100.
    CreditCode,
    /// Administrative division code, GB/T 2260.
    DivisionCode,
    /// Sex code, GB/T 2261.1.
    Sex,
    /// Ethnicity code, GB/T 3304.
    Ethnicity,
    /// Marital status code, GB/T 2261.2.
    MaritalStatus,
    /// Household registration status (article 9).
    HouseholdStatus,
    /// Household registration cancellation reason (article 9).
    HouseholdCancellationReason,
    /// Taxpayer identification number: 15 to 20 digits and capital letters. An individual
    /// business's is often its owner's citizen ID number, so it counts as an identity: a
    /// pseudonym grant replaces it (and a record key made of it) like an ID number.
    TaxpayerId,
}

impl Element {
    /// The element named by a schema's `govbus.element` attribute.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "citizen_id_number" => Self::CitizenIdNumber,
            "id_document_type" => Self::IdDocumentType,
            "id_document_number" => Self::IdDocumentNumber,
            "credit_code" => Self::CreditCode,
            "division_code" => Self::DivisionCode,
            "sex" => Self::Sex,
            "ethnicity" => Self::Ethnicity,
            "marital_status" => Self::MaritalStatus,
            "household_status" => Self::HouseholdStatus,
            "household_cancellation_reason" => Self::HouseholdCancellationReason,
            "taxpayer_id" => Self::TaxpayerId,
            _ => return None,
        })
    }

    /// The code table of a coded element.
    pub fn code_table(self) -> Option<&'static codes::CodeTable> {
        Some(match self {
            Self::IdDocumentType => &codes::ID_DOCUMENT_TYPE,
            Self::Sex => &codes::SEX,
            Self::Ethnicity => &codes::ETHNICITY,
            Self::MaritalStatus => &codes::MARITAL_STATUS,
            Self::HouseholdStatus => &codes::HOUSEHOLD_STATUS,
            Self::HouseholdCancellationReason => &codes::HOUSEHOLD_CANCELLATION_REASON,
            _ => return None,
        })
    }
}

/// A rule broken by a value, before it is tied to a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Rule id, e.g. `gb11643-check-digit`.
    pub rule: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl Fault {
    pub(crate) fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Fault {
            rule,
            message: message.into(),
        }
    }
}
