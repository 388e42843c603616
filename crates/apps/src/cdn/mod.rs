//! The CDN of chapter 4: the shop's origin (an object store) and the caches
//! in front of it, edge and parent. Their logic is sans-IO here: the
//! origin's [`origin::Bucket`] answers requests, a cache's [`store::Store`]
//! decides hit, miss or revalidation per RFC 9111 on the clock it is given.

pub mod origin;
pub mod store;
