"""The MLPerf Inference v3.0 submission tree: staging runs into it (`stage-results`), checking it
(`check-submission`), and running MLCommons' own checker on it (`run-submission-checker`). docs/submission.md."""
