//! postcard output into growable buffers, copying each byte string in one piece.
//!
//! postcard's own `to_extend` feeds a `BytesMut` one byte at a time, and `to_stdvec` grows
//! its vector from empty (a 100 KiB replication payload was reallocated and copied about
//! fourteen times). These write into a buffer the caller sized, copying slices whole.

use bytes::BufMut;
use bytes::BytesMut;
use postcard::ser_flavors::Flavor;
use serde::Serialize;

/// A postcard flavor appending to a buffer (a `Vec<u8>` or a `BytesMut`).
struct Append<B>(B);

impl<B: BufMut> Flavor for Append<B> {
    type Output = B;

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.put_u8(b);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.put_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<B> {
        Ok(self.0)
    }
}

/// `value`'s postcard encoding in a vector allocated once at its exact size.
pub fn to_vec_exact<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())?;
    postcard::serialize_with_flavor(value, Append(Vec::with_capacity(size)))
}

/// Appends `value`'s postcard encoding to `out`.
pub fn append<T: Serialize + ?Sized>(value: &T, out: BytesMut) -> postcard::Result<BytesMut> {
    postcard::serialize_with_flavor(value, Append(out))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use proptest::prelude::*;

    type Value = (String, Vec<Bytes>, BTreeMap<String, u64>, Option<u32>);

    fn value() -> impl Strategy<Value = Value> {
        (
            ".{0,40}",
            prop::collection::vec(
                prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from),
                0..5,
            ),
            prop::collection::btree_map(".{0,8}", any::<u64>(), 0..4),
            any::<Option<u32>>(),
        )
    }

    proptest! {
        #[test]
        fn both_give_postcards_own_encoding(v in value(), prefix in prop::collection::vec(any::<u8>(), 0..9)) {
            let expected = postcard::to_stdvec(&v).expect("encode");
            let exact = super::to_vec_exact(&v).expect("encode");
            prop_assert_eq!(&exact, &expected);
            prop_assert_eq!(exact.capacity(), expected.len());
            let appended = super::append(&v, bytes::BytesMut::from(&prefix[..])).expect("encode");
            prop_assert_eq!(&appended[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&appended[prefix.len()..], &expected[..]);
        }
    }
}
