//! What a lab that attaches late needs to draw the run as if it had been
//! there from the start: the first view and data, every event (the
//! sparklines and the event log are built from them), and the latest view,
//! preview, pause and failure.

use crate::engine::protocol::{Event, Update};
use std::collections::VecDeque;

#[derive(Default)]
pub struct Mirror {
    started: Option<Update>,
    events: VecDeque<Update>,
    view: Option<Update>,
    preview: Option<Update>,
    paused: Option<Update>,
    failed: Option<Update>,
    finished: bool,
}

impl Mirror {
    /// Events kept for late labs: the lab shows far fewer, but its
    /// sparklines are built from the logged records among them.
    const EVENTS: usize = 20_000;

    pub fn apply(&mut self, update: &Update) {
        let slot = match update {
            Update::Started { view, .. } => {
                // A run resumed after its end has nothing left to do.
                self.finished |= view.stage == crate::rundir::Stage::Done;
                &mut self.started
            }
            Update::View { .. } => &mut self.view,
            Update::Preview(_) => &mut self.preview,
            Update::Paused(_) => &mut self.paused,
            Update::Failed(_) => &mut self.failed,
            Update::Session(event) => {
                self.finished |= *event == Event::Finished;
                if self.events.len() == Self::EVENTS {
                    self.events.pop_front();
                }
                self.events.push_back(update.clone());
                return;
            }
            Update::Control(_) | Update::Stopped => return,
        };
        *slot = Some(update.clone());
    }

    /// The run so far, in the order a lab takes it in.
    pub fn replay(&self) -> impl Iterator<Item = &Update> {
        self.started
            .iter()
            .chain(&self.events)
            .chain(&self.paused)
            .chain(&self.failed)
            .chain(&self.view)
            .chain(&self.preview)
    }

    /// Whether training has nothing left to do (finished or failed).
    pub fn settled(&self) -> bool {
        self.failed.is_some() || self.finished
    }

    pub fn failure(&self) -> Option<&str> {
        match &self.failed {
            Some(Update::Failed(message)) => Some(message),
            _ => None,
        }
    }
}
