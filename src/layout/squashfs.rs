//! squashfs: not analysed yet.

use super::{Analysis, LayoutError};

pub fn analyse(_image: &[u8]) -> Result<Analysis, LayoutError> {
    Err(LayoutError::new("squashfs", 0, "not analysed yet"))
}
