//! A byte range of an image file, seen as a stream of its own.

use std::borrow::Borrow;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// `Read`/`Write`/`Seek` confined to `[offset, offset + len)` of a file.
///
/// Positioned I/O leaves the file's shared cursor alone, so other code may
/// use the same file (say, to write the partition table) while this is open.
/// `F` is `&File` or an owned `File`, whichever lifetime suits the caller.
#[derive(Debug)]
pub struct Window<F: Borrow<File>> {
    file: F,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<F: Borrow<File>> Window<F> {
    /// Fails only if the window's end does not fit in a `u64`; a window past
    /// the end of the file is allowed, as writes would simply extend it.
    pub fn new(file: F, offset: u64, len: u64) -> io::Result<Self> {
        if offset.checked_add(len).is_none() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "window end does not fit in u64",
            ));
        }
        Ok(Self {
            file,
            offset,
            len,
            pos: 0,
        })
    }
}

impl<F: Borrow<File>> Read for Window<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let room = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        let got = self
            .file
            .borrow()
            .read_at(&mut buf[..n], self.offset + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<F: Borrow<File>> Write for Window<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::image::sink::check_within(self.pos, buf.len() as u64, self.len, "window")?;
        let n = self.file.borrow().write_at(buf, self.offset + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Positioned writes are already in the kernel; fsync of the whole
        // image is the image builder's decision, not the filesystem's.
        Ok(())
    }
}

impl<F: Borrow<File>> Seek for Window<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.len, to)?;
        Ok(self.pos)
    }
}

/// Shared by the window and the cache so both agree on seek semantics:
/// past the end is allowed (reads see EOF, writes fail), before 0 is not.
pub(crate) fn seek_target(pos: u64, len: u64, to: SeekFrom) -> io::Result<u64> {
    let target = match to {
        SeekFrom::Start(n) => Some(n),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
        SeekFrom::End(d) => len.checked_add_signed(d),
    };
    target.ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "seek outside 0..u64::MAX"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: u64, fill: u8) -> File {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&vec![fill; len as usize], 0).unwrap();
        f
    }

    #[test]
    fn reads_and_writes_stay_inside() {
        let f = file_of(64, 0xAA);
        let mut w = Window::new(&f, 16, 32).unwrap();
        w.write_all(&[1; 32]).unwrap();
        assert_eq!(w.stream_position().unwrap(), 32);

        let mut all = vec![0; 64];
        f.read_exact_at(&mut all, 0).unwrap();
        assert!(all[..16].iter().all(|&b| b == 0xAA));
        assert!(all[16..48].iter().all(|&b| b == 1));
        assert!(all[48..].iter().all(|&b| b == 0xAA));

        w.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        w.read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![1; 32]);
    }

    #[test]
    fn write_crossing_the_end_fails_without_spilling() {
        let f = file_of(64, 0xAA);
        let mut w = Window::new(&f, 16, 32).unwrap();
        w.seek(SeekFrom::End(-4)).unwrap();
        let err = w.write(&[2; 8]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        w.seek(SeekFrom::End(0)).unwrap();
        assert!(w.write(&[2]).is_err());
        w.seek(SeekFrom::Start(1000)).unwrap();
        assert!(w.write(&[2]).is_err());

        let mut all = vec![0; 64];
        f.read_exact_at(&mut all, 0).unwrap();
        assert!(all[16..].iter().all(|&b| b == 0xAA), "nothing written");
        assert_eq!(f.metadata().unwrap().len(), 64, "file not extended");
    }

    #[test]
    fn reads_stop_at_the_end() {
        let f = file_of(64, 7);
        let mut w = Window::new(&f, 60, 2).unwrap();
        let mut buf = [0; 8];
        assert_eq!(w.read(&mut buf).unwrap(), 2);
        assert_eq!(w.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn seek_before_start_fails() {
        let f = file_of(8, 0);
        let mut w = Window::new(&f, 0, 8).unwrap();
        assert!(w.seek(SeekFrom::Current(-1)).is_err());
        assert!(w.seek(SeekFrom::End(-9)).is_err());
        assert_eq!(w.seek(SeekFrom::End(-8)).unwrap(), 0);
    }
}
