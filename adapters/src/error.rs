//! The errors of the adapter contract, as types: an envelope that cannot be expressed in an
//! agency's interface ([`NotDeliverable`]), a callback that cannot be read ([`CallbackError`]),
//! and a unit whose adapter cannot be built ([`BuildError`]).

/// Why an envelope cannot be sent to an agency at all (it is dead-lettered `not-deliverable`
/// without calling the agency).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDeliverable {
    /// The envelope's kind (and status) names no operation this interface has.
    #[error("{interface} has no operation for a {kind} message{} (it takes {takes})", status.map(|s| format!(" with status {s}")).unwrap_or_default())]
    NoOperation {
        /// The interface, as reasons name it ("the police residence interface").
        interface: &'static str,
        /// The envelope's kind (`dossier.result`).
        kind: String,
        /// The envelope's `status` (TrangThaiHoSo), if it has one.
        status: Option<u8>,
        /// What the interface takes, in words.
        takes: String,
    },
    /// The envelope lacks what the agency's document needs, or holds it in a form the
    /// document cannot take.
    #[error("cannot map the envelope to {document}: {reason}")]
    Unmappable {
        /// The agency document ("the police submit format", "HoSoBHXH").
        document: &'static str,
        /// What is missing or wrong, naming the envelope's field.
        reason: String,
    },
}

/// Why an agency's callback body cannot be read into bus terms (answered 400 to the agency).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// The body is not a document of the interface's format (not JSON, not XML in its
    /// namespace, another root element).
    #[error("{0}")]
    Format(String),
    /// A field the interface requires is missing or has a value it does not allow.
    #[error("{0}")]
    Content(String),
    /// This interface takes no callbacks (the national portal sync).
    #[error("{interface} takes no callbacks")]
    NoCallbacks {
        /// The interface, as reasons name it.
        interface: &'static str,
    },
}

impl From<String> for CallbackError {
    /// A rule of the interface's callback that the body breaks, in words.
    fn from(reason: String) -> Self {
        CallbackError::Content(reason)
    }
}

impl From<&str> for CallbackError {
    fn from(reason: &str) -> Self {
        CallbackError::Content(reason.to_string())
    }
}

/// Why a unit's adapter cannot be built (the configuration is refused at start-up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The unit is reached over AMQP.
    #[error("unit {unit} is reached over AMQP, not by an adapter")]
    NotAnAdapterUnit {
        /// Unit code.
        unit: String,
    },
    /// The unit names an adapter this build does not have.
    #[error("unit {unit}: unknown adapter {adapter:?} (this build has: {known})")]
    UnknownAdapter {
        /// Unit code.
        unit: String,
        /// The name in the registry.
        adapter: String,
        /// The names this build has, comma-separated.
        known: String,
    },
    /// The unit's settings (connection options, mapping, transport) are wrong.
    #[error("unit {unit}: {reason}")]
    Settings {
        /// Unit code.
        unit: String,
        /// What is wrong, naming the setting.
        reason: String,
    },
}
