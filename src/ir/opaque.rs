//! A sub-message the IR carries but never interprets (model functions,
//! metadata, device configurations, ...): the encoded protobuf bytes, so the
//! IR stays independent of the protobuf types while the round trip stays lossless.

use bytes::Bytes;

#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Opaque(pub Bytes);
