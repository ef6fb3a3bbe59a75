//! The operator's side: the admin HTTP API and the peers' exchange endpoint (`admin`), the state
//! document and status page (`status`).

pub mod admin;
pub mod status;
