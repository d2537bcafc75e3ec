use regex::Regex;

/// How a source topic is named on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamingPolicy {
    /// Same name. For migrations; loops forever if a flow goes from a cluster to itself.
    Identity,
    /// `<source cluster><separator><topic>`. For DR and active-active: a reverse flow can
    /// tell copies from originals, so nothing is copied back.
    Prefix { separator: String },
}

impl NamingPolicy {
    pub fn target_topic(&self, source_cluster: &str, topic: &str) -> String {
        match self {
            Self::Identity => topic.to_string(),
            Self::Prefix { separator } => format!("{source_cluster}{separator}{topic}"),
        }
    }
}

/// Which source topics a flow copies.
#[derive(Debug, Clone)]
pub struct TopicSelector {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    /// Topics named `<target cluster><separator>…` are copies made by a reverse flow;
    /// copying them back would loop.
    skip_prefix: Option<String>,
}

impl TopicSelector {
    /// Regexes must match the whole topic name. Anchors are added here.
    pub fn new(
        include: &[String],
        exclude: &[String],
        skip_prefix: Option<String>,
    ) -> Result<Self, regex::Error> {
        let anchored = |p: &String| Regex::new(&format!("^(?:{p})$"));
        Ok(Self {
            include: include.iter().map(anchored).collect::<Result<_, _>>()?,
            exclude: exclude.iter().map(anchored).collect::<Result<_, _>>()?,
            skip_prefix,
        })
    }

    pub fn selects(&self, topic: &str) -> bool {
        // Broker-internal topics and Strait's own (`__strait…`) are never copied.
        !topic.starts_with("__")
            && !self
                .skip_prefix
                .as_deref()
                .is_some_and(|p| topic.starts_with(p))
            && self.include.iter().any(|r| r.is_match(topic))
            && !self.exclude.iter().any(|r| r.is_match(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_is_anchored_and_skips_internal_and_reverse_copies() {
        let s = TopicSelector::new(
            &["orders.*".into(), "pay".into()],
            &[".*-tmp".into()],
            Some("secondary.".into()),
        )
        .expect("valid");
        assert!(s.selects("orders"));
        assert!(s.selects("orders.eu"));
        assert!(s.selects("pay"));
        assert!(!s.selects("payments"), "anchored at the end");
        assert!(!s.selects("xorders"), "anchored at the start");
        assert!(!s.selects("orders-tmp"));
        assert!(!s.selects("__consumer_offsets"));
        let all = TopicSelector::new(&[".*".into()], &[], Some("secondary.".into())).expect("ok");
        assert!(!all.selects("secondary.orders"));
        assert!(!all.selects("__strait_offsets"));
    }

    #[test]
    fn naming() {
        let prefix = NamingPolicy::Prefix {
            separator: ".".into(),
        };
        assert_eq!(prefix.target_topic("primary", "orders"), "primary.orders");
        assert_eq!(
            NamingPolicy::Identity.target_topic("primary", "orders"),
            "orders"
        );
    }
}
