"""The ablation report: table, bar chart, qualitative gallery and the paper's findings."""
