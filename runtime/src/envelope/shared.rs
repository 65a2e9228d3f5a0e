//! [`SharedEvent`]: one emitted event as every async delivery of it shares it.

use std::sync::{Arc, OnceLock};

use super::{Envelope, document_bytes};
use crate::error::{Error, ErrorChain, Result};
use crate::event::EventData;

/// An event as the async path shares it: one allocation per emit, shared by every async
/// delivery, with its CloudEvents JSON serialized at most once, on first demand.
pub(crate) struct SharedEvent<T: ?Sized = dyn EventData> {
    cloudevent: OnceLock<std::result::Result<Arc<[u8]>, String>>,
    pub(crate) env: Envelope<T>,
}

impl<T: EventData> SharedEvent<T> {
    pub(crate) fn new(env: Envelope<T>) -> Arc<SharedEvent> {
        Arc::new(SharedEvent { cloudevent: OnceLock::new(), env })
    }
}

impl SharedEvent {
    /// The event's CloudEvents structured JSON, serialized on the first call.
    pub(crate) fn cloudevent(&self) -> Result<Arc<[u8]>> {
        self.cloudevent
            .get_or_init(|| {
                document_bytes(&self.env).map(Arc::from).map_err(|e| match e {
                    // The event is named below: keep only what went wrong.
                    Error::Serialization { source, .. } => source.to_string(),
                    Error::Validation { message, .. } => message,
                    other => ErrorChain(&other).to_string(),
                })
            })
            .clone()
            .map_err(|message| {
                Error::CloudEvent(format!("cannot serialize event `{}`: {message}", self.env.event_type))
            })
    }
}
