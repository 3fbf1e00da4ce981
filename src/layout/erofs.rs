//! erofs: not analysed yet.

use super::{Analysis, LayoutError};

pub fn analyse(_image: &[u8]) -> Result<Analysis, LayoutError> {
    Err(LayoutError::new("erofs", 0, "not analysed yet"))
}
