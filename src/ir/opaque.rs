//! A sub-message the IR carries but never interprets (model functions,
//! metadata, device configurations, ...): the encoded protobuf bytes, so the
//! IR stays independent of the protobuf types while the round trip stays lossless.

use bytes::Bytes;

#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Opaque(pub Bytes);

impl Opaque {
    /// A stable 64-bit FNV-1a digest of the bytes, shown in the text form so
    /// that snapshot diffs reveal a changed sparse initializer.
    pub fn digest(&self) -> u64 {
        let mut h = super::tensor::Fnv::default();
        h.write(&self.0);
        h.0
    }
}
