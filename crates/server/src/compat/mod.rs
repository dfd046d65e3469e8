//! The protocols of older lock servers, served over the one lock model (../shared/COMPAT.md):
//! each compat lock is an ordinary hold with a fencing token, visible to admins and in conflict
//! with native holds of the same name.
//!
//! - [`lockserver_http`]: the original Lockserver's `POST /acquire` and `POST /release`.
//! - [`locker`]: the locker binary TCP protocol, on its own listener.
//! - [`rdlm`]: the RDLM REST API (`/locks/{resource}`, admin `/resources`).

pub(crate) mod locker;
pub(crate) mod lockserver_http;
pub(crate) mod rdlm;
