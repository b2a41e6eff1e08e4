//! A shard's handle on one generation: the process-wide [`Generation`] it serves, behind an
//! `Rc` that the shard's connections clone (no atomic per connection). When the last
//! connection of an old generation lets go, the generation goes to the config thread's
//! graveyard to be freed there: dropping thousands of clusters is not event-loop work.

use std::sync::Arc;

use crate::config::{Generation, Graveyard};

#[derive(Debug)]
pub struct ShardConfig {
    generation: Option<Arc<Generation>>,
    graveyard: Option<&'static Graveyard>,
}

impl ShardConfig {
    /// `generation`, handed to `graveyard` when done with (`None`: freed in place, for
    /// tests and tools without a config thread).
    pub fn new(generation: Arc<Generation>, graveyard: Option<&'static Graveyard>) -> ShardConfig {
        ShardConfig {
            generation: Some(generation),
            graveyard,
        }
    }

    pub fn generation(&self) -> &Arc<Generation> {
        self.generation.as_ref().expect("set until dropped")
    }
}

impl std::ops::Deref for ShardConfig {
    type Target = Generation;

    fn deref(&self) -> &Generation {
        self.generation()
    }
}

impl Drop for ShardConfig {
    fn drop(&mut self) {
        if let (Some(g), Some(yard)) = (self.generation.take(), self.graveyard) {
            yard.bury(g);
        }
    }
}
