//! One task per timer kind for the whole gateway rather than one per session or
//! request: cheaper when thousands are idle.

pub mod deadlines;
pub mod delivery;
pub mod heartbeat;
