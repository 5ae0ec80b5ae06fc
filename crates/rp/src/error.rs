//! How a flow step fails. The HTTP API maps each variant to its error code.

/// A refused or failed flow step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The device's answer is for another name, order, key or user, or does not decode.
    /// Nothing changed: the flow can take a correct answer.
    #[error("the device's answer is not acceptable: {0}")]
    DeviceInvalid(String),
    /// The issuer refused or could not be reached; the detail carries the problem type.
    #[error("issuer: {0}")]
    Issuer(String),
    /// The step does not fit the flow's state (out of order, or the flow is complete or failed).
    #[error("{0}")]
    State(&'static str),
}

impl FlowError {
    /// An issuer failure, with the problem document's detail and type when there is one.
    pub fn issuer(e: instant_acme::Error) -> Self {
        Self::Issuer(match &e {
            instant_acme::Error::Api(problem) => format!(
                "{} ({})",
                problem.detail.as_deref().unwrap_or("no detail"),
                problem.r#type.as_deref().unwrap_or("no type")
            ),
            other => other.to_string(),
        })
    }

    pub(crate) fn device(reason: impl Into<String>) -> Self {
        Self::DeviceInvalid(reason.into())
    }
}
