//! Page-aligned byte buffers without `unsafe`.
//!
//! O_DIRECT needs the buffer address aligned to the device's logical block
//! size; 4096 covers every logical block size we meet (512 and 4096). Rather
//! than a custom allocator we over-allocate a `Vec<u8>` and hand out the
//! aligned window inside it.

pub(crate) const ALIGN: usize = 4096;

pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zero-filled buffer of `len` bytes whose first byte is 4096-aligned.
    pub(crate) fn zeroed(len: usize) -> AlignedBuf {
        // vec![0; n] goes through calloc, so the pages of a large buffer are
        // only touched when first used.
        let raw = vec![0u8; len + ALIGN];
        let addr = raw.as_ptr() as usize;
        let off = (ALIGN - addr % ALIGN) % ALIGN;
        AlignedBuf { raw, off, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

pub(crate) fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

pub(crate) fn round_down(x: u64, to: u64) -> u64 {
    x / to * to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [1usize, 4096, 4 << 20] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice()[len - 1] = 7;
            assert_eq!(b.as_slice()[len - 1], 7);
        }
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(0, 4096), 0);
        assert_eq!(round_up(1, 4096), 4096);
        assert_eq!(round_up(4096, 4096), 4096);
        assert_eq!(round_down(4097, 4096), 4096);
    }
}
