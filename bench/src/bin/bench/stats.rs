//! Medians, per-run ratios with their 95 % intervals, the goals' verdicts, and pooling of
//! several invocations' JSON files.

use super::*;

/// The middle value, or the mean of the two middle values of an even count (JSON files
/// recorded before 2026-12-03 hold the upper of the two).
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 0 {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// Median of one figure over the runs of one system; None if it never ran.
pub(super) fn median_of(
    samples: &[Sample],
    system: &str,
    f: impl Fn(&Sample) -> f64,
) -> Option<f64> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.system == system)
        .map(f)
        .collect();
    (!v.is_empty()).then(|| median(v))
}

/// `a`'s figure divided by `b`'s in the same run, for every run that measured both; the
/// median is the headline, the spread says whether one invocation's median can be trusted
/// (on the test VM single runs have spread by more than a goal's margin).
pub(super) struct RunRatios(Vec<f64>);

impl RunRatios {
    pub(super) fn of(
        samples: &[Sample],
        a: &str,
        b: &str,
        f: impl Fn(&Sample) -> f64,
    ) -> Option<Self> {
        let of = |system: &str, run: u64| {
            samples
                .iter()
                .find(|s| s.system == system && s.run == run)
                .map(&f)
        };
        let mut ratios: Vec<f64> = samples
            .iter()
            .filter(|s| s.system == a)
            .filter_map(|s| Some(of(a, s.run)? / of(b, s.run)?))
            .collect();
        ratios.sort_by(f64::total_cmp);
        (!ratios.is_empty()).then_some(Self(ratios))
    }

    pub(super) fn median(&self) -> f64 {
        median(self.0.clone())
    }

    /// "min-max of N runs"
    pub(super) fn range(&self) -> String {
        let (min, max) = (self.0[0], self.0[self.0.len() - 1]);
        format!("{min:.2}-{max:.2} of {}", self.0.len())
    }

    /// A 95 % confidence interval for the median, from the runs' order alone (no
    /// assumption about how the ratios are distributed): the k-th lowest and the k-th
    /// highest ratio, with k the largest for which the true median falls below the one
    /// or above the other with at most 2.5 % chance each (the number of runs below the
    /// median is Binomial(n, 1/2)). None below 6 runs, where even the lowest and the
    /// highest cover less than 95 %.
    pub(super) fn median_interval(&self) -> Option<(f64, f64)> {
        let n = self.0.len();
        let (mut below, mut p_exactly, mut k) = (0.0, 0.5f64.powi(n as i32), 0);
        for j in 0..n {
            below += p_exactly; // P(at most j runs below the median)
            if below > 0.025 {
                break;
            }
            k = j + 1;
            p_exactly *= (n - j) as f64 / (j + 1) as f64;
        }
        (k >= 1).then(|| (self.0[k - 1], self.0[n - k]))
    }

    /// Whether the goal is met: decided only when the whole 95 % interval of the median is
    /// on one side of it, so that one lucky or unlucky invocation does not settle it.
    pub(super) fn verdict(&self, goal: Goal) -> &'static str {
        let (met, missed) = match (goal, self.median_interval()) {
            (Goal::None, _) => return "-",
            (_, None) => return "undecided (fewer than 6 runs)",
            (Goal::AtLeast(bound), Some((low, high))) => (low >= bound, high < bound),
            (Goal::AtMost(bound), Some((low, high))) => (high <= bound, low > bound),
        };
        match (met, missed) {
            (true, _) => "met",
            (_, true) => "not met",
            _ => "undecided",
        }
    }
}

/// What a ratio should be.
#[derive(Clone, Copy)]
pub(super) enum Goal {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtLeast(bound) => write!(f, ">= {bound}"),
            Goal::AtMost(bound) => write!(f, "<= {bound}"),
            Goal::None => f.write_str("-"),
        }
    }
}

/// `a`'s throughput over `b`'s, run by run.
pub(super) fn throughput_ratios(samples: &[Sample], a: &str, b: &str) -> Option<RunRatios> {
    RunRatios::of(samples, a, b, |s| 1.0 / s.seconds)
}

/// The ratios the backlog copy reports, each with its goal.
pub(super) fn ratio_goals(samples: &[Sample]) -> [(&'static str, Option<RunRatios>, Goal); 11] {
    // Each run's systems ran back to back under the same conditions; the brokers drift over
    // an invocation (background deletion of earlier runs' topics), so per-run ratios are the
    // fairest comparison.
    let throughput = |a, b| throughput_ratios(samples, a, b);
    let cpu = |a, b| RunRatios::of(samples, a, b, |s| s.cpu_seconds);
    let rss = |a, b| RunRatios::of(samples, a, b, |s| s.peak_rss_mb);
    [
        (
            "throughput, Strait / MirrorMaker 2",
            throughput("strait", "mm2"),
            Goal::AtLeast(2.0),
        ),
        (
            "throughput, Strait / ceiling",
            throughput("strait", "ceiling"),
            Goal::AtLeast(THROUGHPUT_GOAL),
        ),
        (
            "throughput, Strait / bare loop (drops headers)",
            throughput("strait", "ceiling-bare"),
            Goal::None,
        ),
        (
            "throughput, Strait / batch loop (consumes in batches, as Strait)",
            throughput("strait", "ceiling-batch"),
            Goal::None,
        ),
        (
            "CPU s per GB, Strait / MirrorMaker 2",
            cpu("strait", "mm2"),
            Goal::AtMost(0.5),
        ),
        (
            "CPU s per GB, Strait / ceiling",
            cpu("strait", "ceiling"),
            Goal::None,
        ),
        (
            "peak RSS, Strait / MirrorMaker 2",
            rss("strait", "mm2"),
            Goal::AtMost(0.1),
        ),
        (
            "throughput, Strait with --alt / ceiling",
            throughput("strait-alt", "ceiling"),
            Goal::None,
        ),
        (
            "throughput, Strait with --alt / Strait",
            throughput("strait-alt", "strait"),
            Goal::None,
        ),
        (
            "peak RSS, Strait with --alt / Strait",
            rss("strait-alt", "strait"),
            Goal::None,
        ),
        (
            "throughput with / without offset sync",
            throughput("strait", "strait-nosync"),
            Goal::AtLeast(0.95),
        ),
    ]
}

/// Prints the table of ratios (median, spread, 95 % interval of the median and whether
/// the goal is met) and returns its JSON: `ratios`, `per_run_ratios`, `median_intervals`.
pub(super) fn print_ratios<N: AsRef<str>>(
    ratios: impl IntoIterator<Item = (N, Option<RunRatios>, Goal)>,
) -> serde_json::Map<String, serde_json::Value> {
    let (mut medians, mut per_run, mut intervals) = (
        serde_json::Map::new(),
        serde_json::Map::new(),
        serde_json::Map::new(),
    );
    let mut printed_header = false;
    for (name, ratio, goal) in ratios {
        let name = name.as_ref();
        let Some(ratio) = ratio else { continue };
        if !printed_header {
            println!(
                "\n| ratio (median of per-run ratios) | value | per run (lowest-highest) | \
                 95 % interval of the median | goal | verdict |\n|---|---|---|---|---|---|"
            );
            printed_header = true;
        }
        let median = ratio.median();
        let interval = ratio.median_interval();
        println!(
            "| {name} | {median:.2} | {} | {} | {goal} | {} |",
            ratio.range(),
            interval.map_or("-".to_string(), |(low, high)| format!("{low:.2}-{high:.2}")),
            ratio.verdict(goal)
        );
        medians.insert(name.to_string(), serde_json::json!(median));
        per_run.insert(name.to_string(), serde_json::json!(ratio.0));
        intervals.insert(
            name.to_string(),
            serde_json::json!(interval.map(|(l, h)| [l, h])),
        );
    }
    let mut json = serde_json::Map::new();
    json.insert("ratios".into(), medians.into());
    json.insert("per_run_ratios".into(), per_run.into());
    json.insert("median_intervals".into(), intervals.into());
    json
}

/// `bench --pool FILE...`: pools the backlog copies of several bench JSON files
/// (invocations of the same build, e.g. on different days) and prints the ratios of their
/// runs as one table: median, 95 % interval and verdict. Each ratio still pairs systems
/// of the same run.
pub(super) fn pool(files: &[String]) -> Result<()> {
    if files.is_empty() {
        return Err("--pool needs at least one BENCH_JSON file".into());
    }
    let mut samples = Vec::new();
    let mut machines = std::collections::BTreeSet::new();
    let mut invocation_medians = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let first_of_file = samples.len();
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        let runs = json["backlog"]["runs"]
            .as_array()
            .ok_or_else(|| format!("{file}: no backlog.runs (not a backlog bench JSON)"))?;
        for (i, run) in runs.iter().enumerate() {
            let number = |key: &str| {
                run[key]
                    .as_f64()
                    .ok_or_else(|| format!("{file}: backlog.runs[{i}].{key} is not a number"))
            };
            samples.push(Sample {
                // Runs of different files must not pair up.
                run: index as u64 * 1_000_000 + number("run")? as u64,
                system: run["system"]
                    .as_str()
                    .ok_or_else(|| format!("{file}: backlog.runs[{i}].system is not a string"))?
                    .to_string(),
                seconds: number("seconds")?,
                startup: number("seconds_to_first_record")?,
                cpu_seconds: number("cpu_seconds")?,
                peak_rss_mb: number("peak_rss_mb")?,
                brokers_cpu_seconds: number("brokers_cpu_seconds").unwrap_or(f64::NAN),
            });
        }
        let machine = json["machine"].as_str().unwrap_or("machine not recorded");
        let own_median = throughput_ratios(&samples[first_of_file..], "strait", "ceiling")
            .map(|own| own.median());
        println!(
            "{file}: {} measured copies, {machine}{}",
            runs.len(),
            own_median.map_or(String::new(), |m| format!(
                "; throughput Strait / ceiling {m:.2}"
            ))
        );
        invocation_medians.extend(own_median);
        machines.insert(machine.to_string());
    }
    if let Some(warning) = mixed_machines_warning(&machines) {
        println!("\n{warning}");
    }
    if let Some(summary) = by_invocation(&invocation_medians, THROUGHPUT_GOAL) {
        println!("\n{summary}");
    }
    print_ratios(ratio_goals(&samples));
    Ok(())
}

/// The goal for Strait's throughput against the ceiling loop.
const THROUGHPUT_GOAL: f64 = 0.9;

/// The pooled interval treats every run as independent, but the runs of one invocation
/// are not: a whole invocation is faster or slower with the VM and its brokers. So the
/// invocations' own medians are judged too, each counted once, with the same interval
/// and verdict as runs (which needs 6 invocations or more).
pub(super) fn by_invocation(medians: &[f64], goal: f64) -> Option<String> {
    if medians.len() < 2 {
        return None;
    }
    let mut sorted = medians.to_vec();
    sorted.sort_by(f64::total_cmp);
    let list: Vec<String> = sorted.iter().map(|m| format!("{m:.2}")).collect();
    let at_goal = sorted.iter().filter(|&&m| m >= goal).count();
    let invocations = RunRatios(sorted);
    let judged = match invocations.median_interval() {
        Some((low, high)) => format!(
            "95 % interval {low:.2}-{high:.2}, {}",
            invocations.verdict(Goal::AtLeast(goal))
        ),
        None => "undecided (fewer than 6 invocations)".to_string(),
    };
    Some(format!(
        "By invocation, throughput Strait / ceiling: medians {} (lowest to highest), {at_goal} \
         of {} at or above {goal}; their median {:.2}, {judged}",
        list.join(", "),
        invocations.0.len(),
        invocations.median(),
    ))
}

/// The test VMs come in more than one kind, and the ratio to the loop differs by kind
/// (0.94x on Intel Xeon against 0.89x on AMD EPYC over 2026-12-04/05), so a pool across
/// kinds answers for neither.
pub(super) fn mixed_machines_warning(
    machines: &std::collections::BTreeSet<String>,
) -> Option<String> {
    (machines.len() > 1).then(|| {
        let list: Vec<&str> = machines.iter().map(String::as_str).collect();
        format!(
            "Warning: these files come from {} kinds of machine ({}); ratios differ by \
             machine, so pool one kind at a time.",
            machines.len(),
            list.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratios(n: usize) -> RunRatios {
        RunRatios((1..=n).map(|i| i as f64 / 10.0).collect())
    }

    #[test]
    fn pooling_judges_the_invocations_medians_too() {
        assert_eq!(by_invocation(&[0.95], 0.9), None);
        let three = by_invocation(&[0.99, 0.88, 0.91], 0.9).expect("three invocations");
        assert!(
            three.contains("medians 0.88, 0.91, 0.99 (lowest to highest), 2 of 3 at or above 0.9"),
            "{three}"
        );
        assert!(
            three.contains("their median 0.91, undecided (fewer than 6 invocations)"),
            "{three}"
        );
        // Six invocations all at or above the goal decide it; one below leaves it open.
        let six = by_invocation(&[0.91, 0.95, 0.93, 0.90, 0.99, 0.92], 0.9).expect("six");
        assert!(six.contains("95 % interval 0.90-0.99, met"), "{six}");
        let one_below = by_invocation(&[0.91, 0.95, 0.93, 0.89, 0.99, 0.92], 0.9).expect("six");
        assert!(
            one_below.contains("95 % interval 0.89-0.99, undecided"),
            "{one_below}"
        );
    }

    #[test]
    fn pooling_files_of_different_machines_warns() {
        let kinds = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            mixed_machines_warning(&kinds(&["2 cores, 24 GiB, AMD EPYC"])),
            None
        );
        let warning = mixed_machines_warning(&kinds(&[
            "2 cores, 24 GiB, AMD EPYC",
            "2 cores, 24 GiB, Intel(R) Xeon(R) Processor",
        ]))
        .expect("two kinds of machine");
        assert!(warning.contains("2 kinds of machine"), "{warning}");
        assert!(warning.contains("AMD EPYC; 2 cores"), "{warning}");
    }

    #[test]
    fn median_interval_widens_to_the_order_statistics_that_cover_95_percent() {
        // Below 6 runs even the lowest and highest cover less than 95 % (5 runs: 93.75 %).
        assert_eq!(ratios(5).median_interval(), None);
        assert_eq!(ratios(6).median_interval(), Some((0.1, 0.6)));
        // Tabulated: 19 runs -> the 5th lowest and the 5th highest; 8 -> 1st and 8th; 9 -> 2nd and 8th.
        assert_eq!(ratios(19).median_interval(), Some((0.5, 1.5)));
        assert_eq!(ratios(8).median_interval(), Some((0.1, 0.8)));
        assert_eq!(ratios(9).median_interval(), Some((0.2, 0.8)));
    }

    #[test]
    fn a_goal_is_decided_only_when_the_whole_interval_is_on_one_side() {
        let at = |values: &[f64]| RunRatios(values.to_vec());
        let above = at(&[0.91, 0.92, 0.95, 0.97, 1.0, 1.1]);
        let straddling = at(&[0.85, 0.88, 0.9, 0.93, 0.97, 1.0]);
        let below = at(&[0.7, 0.75, 0.8, 0.85, 0.88, 0.89]);
        assert_eq!(above.verdict(Goal::AtLeast(0.9)), "met");
        assert_eq!(straddling.verdict(Goal::AtLeast(0.9)), "undecided");
        assert_eq!(below.verdict(Goal::AtLeast(0.9)), "not met");
        assert_eq!(below.verdict(Goal::AtMost(0.9)), "met");
        assert_eq!(above.verdict(Goal::AtMost(0.9)), "not met");
        assert_eq!(above.verdict(Goal::None), "-");
        assert_eq!(
            at(&[1.0; 5]).verdict(Goal::AtLeast(0.9)),
            "undecided (fewer than 6 runs)"
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
