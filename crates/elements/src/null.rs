//! `null`: passes frames across. (Being written.)
