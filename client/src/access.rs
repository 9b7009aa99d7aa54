//! Which access point (name server) to ask next. Sans-IO: fed with outcomes.
//!
//! The client keeps asking the access point that answered last; one that fails moves
//! the client to the next in the list, round the list.

/// The list and the current position.
#[derive(Debug, Clone)]
pub struct AccessPoints {
    points: Vec<String>,
    current: usize,
}

impl AccessPoints {
    /// The access points, in the order given; the first is current.
    pub fn new(points: Vec<String>) -> Self {
        Self { points, current: 0 }
    }

    /// Every access point once, starting with the current one.
    pub fn order(&self) -> Vec<String> {
        let n = self.points.len();
        (0..n)
            .map(|i| self.points[(self.current + i) % n].clone())
            .collect()
    }

    /// `point` answered: it becomes the current one.
    pub fn answered(&mut self, point: &str) {
        if let Some(i) = self.points.iter().position(|p| p == point) {
            self.current = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_access_point_is_passed_over_and_the_answering_one_kept() {
        let mut a = AccessPoints::new(vec!["n1:1".into(), "n2:1".into(), "n3:1".into()]);
        assert_eq!(a.order(), ["n1:1", "n2:1", "n3:1"]);
        // n1 failed, n2 answered.
        a.answered("n2:1");
        assert_eq!(a.order(), ["n2:1", "n3:1", "n1:1"]);
        a.answered("unknown:1");
        assert_eq!(a.order()[0], "n2:1");
    }
}
