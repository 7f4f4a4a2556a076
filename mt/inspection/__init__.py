"""Look inside a run folder: attention maps, hidden-unit activations, training curves.

    attention.py   attention weights of the decoded translations: text map, PNG heatmap, HTML report
    cells.py       encoder hidden units over a text, and the units that follow simple features
    curves.py      training loss, dev loss and dev BLEU against the step, from metrics.jsonl
    html.py        self-contained HTML pages (inline CSS, colours as HTML tables, no scripts)
    plot.py        matplotlib, imported only when an image is asked for (`pip install mt[viz]`)

TensorFlow and matplotlib are imported inside functions, so `mt --help` stays instant. The package is
`inspection`, not `inspect`: a module of mt/ named like the standard library's `inspect` would replace it
whenever a file of mt/ is run as a script (`python mt/cli.py`), and break click and dataclasses.
"""
