//! The output table's memfd: created per job, sealed once the job reports
//! (from then on nothing can change it, whatever of the job still runs),
//! validated and re-opened read-only for the caller.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::Mode;

use crate::arrow_check::{self, TableLimits};
use crate::config::OutputLimits;

/// An empty, sealable memfd for the worker to write the output table into.
pub fn create() -> std::io::Result<OwnedFd> {
    Ok(memfd_create(c"pyclave-output", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?)
}

/// An output memfd sealed against writes, growth, shrinking and further
/// seals: its bytes are final, whoever still holds it.
pub struct Sealed(OwnedFd);

/// Seals `memfd`. Adding the seals waits for writes in progress, and fails
/// while a process maps it writable (a process of the job still could
/// write): then `memfd` comes back with the error.
pub fn seal(memfd: OwnedFd) -> Result<Sealed, (OwnedFd, nix::Error)> {
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
    match fcntl(memfd.as_fd(), FcntlArg::F_ADD_SEALS(seals)) {
        Ok(_) => Ok(Sealed(memfd)),
        Err(error) => Err((memfd, error)),
    }
}

impl Sealed {
    /// How many bytes it holds.
    pub fn size_bytes(&self) -> nix::Result<u64> {
        Ok(nix::sys::stat::fstat(&self.0)?.st_size as u64)
    }
}

/// Validates the Arrow file in `sealed` and returns a read-only descriptor
/// for the caller. `Err` is the rejection reason shown to the caller.
pub fn finalize(sealed: Sealed, limits: &OutputLimits) -> Result<OwnedFd, String> {
    let file = std::fs::File::from(sealed.0);
    let metadata = file.metadata().map_err(|e| format!("cannot stat the output: {e}"))?;
    let size = metadata.len();
    if size == 0 {
        return Err("the job wrote no output table".into());
    }
    // A sparse file would make validation fault in pages (in the
    // supervisor, outside every job limit) that the job never paid for.
    let allocated = std::os::unix::fs::MetadataExt::blocks(&metadata) * 512;
    if allocated < size {
        return Err(format!("the output table is sparse: {size} bytes long, {allocated} allocated"));
    }
    let table_limits = TableLimits {
        max_rows: limits.max_rows,
        max_columns: limits.max_columns,
        max_table_bytes: limits.max_table_bytes,
    };
    if size > table_limits.max_table_bytes {
        return Err(
            arrow_check::TableRejection::TooLarge { bytes: size, limit: table_limits.max_table_bytes }.to_string()
        );
    }
    // SAFETY: the memfd is sealed against writes, growth and shrinking, and
    // the seals themselves are sealed, so the mapped bytes cannot change or
    // disappear while the map lives.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("cannot map the output: {e}"))?;
    arrow_check::validate_table(bytes::Bytes::from_owner(map), &table_limits)
        .map_err(|rejection| rejection.to_string())?;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    nix::fcntl::open(path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot re-open the output read-only: {e}"))
}
