//! ext4: not analysed yet.

use super::{Analysis, LayoutError};

pub fn analyse(_image: &[u8]) -> Result<Analysis, LayoutError> {
    Err(LayoutError::new("ext4", 0, "not analysed yet"))
}
