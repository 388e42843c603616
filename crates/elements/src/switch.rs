//! `switch`: an L2 learning switch. (Being written.)
