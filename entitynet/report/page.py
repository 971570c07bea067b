"""The report's HTML: one static page, plain HTML and CSS, no script, nothing fetched from the
network; images are files beside it (relative links), so it opens from disk.

Numbers the tests compare with the run's files carry ``data-fact="NAME"``.
"""

from __future__ import annotations

from typing import Any

import jinja2

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:12px 16px 48px}
h1{font-size:1.5em;margin:.6em 0 .2em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.8em}
h3{margin:1.2em 0 .4em}
nav a{margin-right:12px}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.92em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f0f0f0}
.missing{color:#8a4b00;background:#fff4e0;border-left:4px solid #f0a030;padding:6px 10px;margin:.6em 0}
.note{color:#555;font-size:.9em}
pre{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:.85em}
img.figure{max-width:100%;height:auto;background:#fff}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;font-size:.85em;overflow-wrap:anywhere}
.card img{width:100%;height:auto;display:block;border-radius:3px}
.card ul{margin:4px 0 0;padding-left:18px}
.status-finished{color:#1a7f37}.status-outdated{color:#b35900}.status-not{color:#888}
code{font-size:.9em}
@media (max-width:600px){body{font-size:14px}.grid{grid-template-columns:repeat(2,1fr)}}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>EntityNet run report: {{ run_name }}</title>
<style>{{ style }}</style></head>
<body><main>
<h1>EntityNet run report</h1>
<p class="note">{{ run }} &middot; made {{ made_at }}{% if synthetic %} &middot; <strong>a demo run: the images are SYNTHETIC drawings</strong>{% endif %}</p>
<nav><a href="#run">The run</a><a href="#data">The data</a><a href="#pictures">The pictures</a><a href="#training">Training</a><a href="#evaluation">Evaluation</a></nav>

<h2 id="run">The run</h2>
<table><tr><th>stage</th><th>status</th><th class="n">seconds</th><th>finished</th><th>key figures</th></tr>
{% for s in stages %}<tr><td>{{ s.name }}</td><td class="status-{{ s.status.split()[0] }}" data-fact="stage.{{ s.name }}">{{ s.status }}</td>
<td class="n">{{ s.seconds if s.seconds is not none else "" }}</td><td>{{ s.finished_at or "" }}</td><td>{% if s.summary %}<pre>{{ s.summary }}</pre>{% endif %}</td></tr>
{% endfor %}</table>
<table>{% for name, where in places.items() %}<tr><th>{{ name }}</th><td>{% if where %}<code>{{ where }}</code>{% else %}<span class="missing">not made in this run</span>{% endif %}</td></tr>{% endfor %}</table>
{% if config %}<details><summary>The configuration that ran</summary><pre>{{ config }}</pre></details>{% else %}<p class="missing">No configuration recorded (RUN/config/ is empty).</p>{% endif %}

<h2 id="data">The data</h2>
<h3>Entities</h3>
{% if entities %}<p><span data-fact="entities">{{ entities.total }}</span> entities, <span data-fact="natural_types">{{ entities.natural_types }}</span> natural types.</p>
<table><tr><th>domain</th><th class="n">entities</th></tr>{% for d, n in entities.per_domain.items() %}<tr><td>{{ d }}</td><td class="n" data-fact="domain.{{ d }}">{{ n }}</td></tr>{% endfor %}</table>
<details><summary>Entities per natural type (the {{ entities.per_natural_type|length }} largest)</summary><table><tr><th>natural type</th><th class="n">entities</th></tr>
{% for t, n in entities.per_natural_type %}<tr><td>{{ t }}</td><td class="n">{{ n }}</td></tr>{% endfor %}</table></details>
{% else %}<p class="missing">No entities: the kg stage (or an import) has not run.</p>{% endif %}

<h3>Images per entity</h3>
{% if per_entity %}<p>From the {{ per_entity.source }}: <span data-fact="entities_with_images">{{ per_entity.with_images }}</span> entities have images; the most has <span data-fact="max_per_entity">{{ per_entity.max }}</span>. Cap in force: {{ per_entity.cap }}.</p>
<table><tr>{% for label in per_entity.buckets %}<th class="n">{{ label }} images</th>{% endfor %}</tr>
<tr>{% for label, n in per_entity.buckets.items() %}<td class="n" data-fact="bucket.{{ label }}">{{ n }}</td>{% endfor %}</tr></table>
{% if figures.per_entity %}<img class="figure" src="{{ figures.per_entity }}" alt="images per entity: head and tail">{% endif %}
{% else %}<p class="missing">No images yet: the download stage has not run.</p>{% endif %}

<h3>Candidates per engine and query kind</h3>
{% if candidates %}<p><span data-fact="candidates">{{ candidates.total }}</span> candidates.</p>
<table><tr><th>engine</th><th>query kind</th><th class="n">candidates</th></tr>{% for e, k, n in candidates.per_engine_kind %}<tr><td>{{ e }}</td><td>{{ k }}</td><td class="n">{{ n }}</td></tr>{% endfor %}</table>
{% else %}<p class="missing">No candidates: the search stage (or an import) has not run.</p>{% endif %}

<h3>Licences of the stored images</h3>
{% if stored %}<table><tr><th>licence</th><th class="n">images</th></tr>{% for l, n in stored.licences %}<tr><td>{{ l }}</td><td class="n" data-fact="licence.{{ l }}">{{ n }}</td></tr>{% endfor %}</table>
{% else %}<p class="missing">No stored images: the download stage has not run.</p>{% endif %}

<h3>Download failures</h3>
{% if failures %}<p><span data-fact="stored">{{ failures.stored }}</span> stored of {{ failures.urls }} URLs; <span data-fact="failed">{{ failures.failed }}</span> failed.</p>
{% if failures.reasons %}<table><tr><th>reason</th><th class="n">URLs</th><th>examples</th></tr>{% for r, n, urls in failures.reasons %}<tr><td>{{ r }}</td><td class="n" data-fact="failure.{{ r }}">{{ n }}</td><td>{% for u in urls %}<code>{{ u }}</code><br>{% endfor %}</td></tr>{% endfor %}</table>{% endif %}
{% else %}<p class="missing">The download stage has not run.</p>{% endif %}

<h3>Duplicates</h3>
{% if duplicates %}<table><tr><th class="n">images</th><th class="n">unique</th><th class="n">identical</th><th class="n">near</th></tr>
<tr><td class="n">{{ duplicates.images }}</td><td class="n">{{ duplicates.unique }}</td><td class="n" data-fact="identical">{{ duplicates.identical }}</td><td class="n" data-fact="near">{{ duplicates.near }}</td></tr></table>
{% else %}<p class="missing">The download stage has not run.</p>{% endif %}

<h3>The dataset</h3>
{% if build %}<p><span data-fact="rows">{{ build.rows }}</span> rows of {{ build.entities }} entities. Not rows: {{ build.merged_duplicates }} merged duplicates, {{ build.straddles_splits }} images whose entities straddle splits, {{ build.without_entity }} without an entity.</p>
<table><tr><th>configuration</th>{% for s in splits_order %}<th class="n">{{ s }}</th>{% endfor %}</tr>
{% for name, per in build.rows_per_config.items() %}<tr><td>{{ name }}</td>{% for s in splits_order %}<td class="n" data-fact="rows.{{ name }}.{{ s }}">{{ per.get(s, 0) }}</td>{% endfor %}</tr>{% endfor %}</table>
<h3>Decontamination</h3>
{% if build.decontamination.checked %}<p>Checked against {{ build.decontamination.evaluation_images }} evaluation images of <code>{{ build.decontamination.source }}</code>{% if build.decontamination.unreadable %} ({{ build.decontamination.unreadable }} could not be read and were not checked){% endif %}: <span data-fact="decontaminated">{{ build.decontamination.removed }}</span> downloaded images removed.
{% if decontamination_csv %}Which evaluation image matched which downloaded image: <a href="{{ decontamination_csv }}">decontamination.csv</a> (also in the dataset).{% endif %}</p>
{% else %}<p class="missing">Not checked: the build had no evaluation set to keep out (build.exclude_near).</p>{% endif %}
{% else %}<p class="missing">No dataset: the build stage has not run.</p>{% endif %}

<h2 id="pictures">The pictures</h2>
{% if pictures %}<p class="note">A seeded sample across entities of each split. Under each: its entity, its alt text, and three texts the trainer's text mix pairs it with (epochs 0, 1, 2){% if not text_mix %} (not shown: the text mix needs entitynet's training module){% endif %}.</p>
{% for split, shown in pictures.items() %}<h3>{{ split }}</h3><div class="grid">
{% for p in shown %}<div class="card"><img src="{{ p.thumb }}" width="{{ p.width }}" height="{{ p.height }}" alt="{{ p.entity }}">
<strong>{{ p.entity }}</strong>{% if p.natural_type %} <span class="note">({{ p.natural_type }})</span>{% endif %}<br>
<span class="note">alt:</span> {{ p.alt_text or "(none)" }}{% if p.texts %}<ul>{% for t in p.texts %}<li>{{ t }}</li>{% endfor %}</ul>{% endif %}</div>
{% endfor %}</div>{% endfor %}
{% else %}<p class="missing">No pictures: the dataset is not built.</p>{% endif %}

<h2 id="training">Training</h2>
{% if training %}{% if figures.training %}<img class="figure" src="{{ figures.training }}" alt="training curves">{% endif %}
{% if figures.evaluation %}<h3>Periodic evaluation</h3><img class="figure" src="{{ figures.evaluation }}" alt="evaluation scores by step">{% endif %}
<details><summary>Logged steps ({{ training.records|length }})</summary><table><tr>{% for k in training_columns %}<th class="n">{{ k }}</th>{% endfor %}</tr>
{% for r in training.records %}<tr>{% for k in training_columns %}<td class="n">{{ fmt(r.get(k)) }}</td>{% endfor %}</tr>{% endfor %}</table></details>
{% if not figures_available %}<p class="missing">Figures need matplotlib: pip install 'entitynet[report]'.</p>{% endif %}
{% else %}<p class="missing">No training in this run (no {{ metrics_log }}).</p>{% endif %}

<h2 id="evaluation">Evaluation</h2>
{% if evaluation %}{% if evaluation.evaluations %}<table><tr><th></th><th class="n">top-1</th><th class="n">chance</th><th class="n">x chance</th><th class="n">images</th><th class="n">entities</th><th>split</th></tr>
{% for key, e in evaluation.evaluations.items() %}<tr><th>{{ key }}</th><td class="n" data-fact="eval.{{ key }}.acc1">{{ fmt(e.acc1) }}</td><td class="n" data-fact="eval.{{ key }}.chance">{{ fmt(e.chance) }}</td>
<td class="n">{{ "%.1f"|format(e.acc1 / e.chance) if e.chance and e.acc1 is not none else "" }}</td><td class="n">{{ e.images }}</td><td class="n">{{ e.classes }}</td><td>{{ e.split }}</td></tr>{% endfor %}</table>
<p class="note">seen_entities: held-out images of entities the model trained on; unseen_entities: entities it never saw in training.</p>{% endif %}
<h3>Every task in eval/</h3>
{% if evaluation.tasks %}<table><tr><th>task</th><th>split</th><th class="n">images</th><th class="n">classes</th><th class="n">chance</th>{% for m in metric_columns %}<th class="n">{{ m }}</th>{% endfor %}</tr>
{% for t in evaluation.tasks %}<tr><td>{{ t.task }}</td><td>{{ t.split or "" }}</td><td class="n">{{ t.images }}</td><td class="n">{{ t.classes }}</td><td class="n">{{ fmt(t.chance) }}</td>{% for m in metric_columns %}<td class="n" data-fact="task.{{ t.task }}.{{ m }}">{{ fmt(t.metrics.get(m)) }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="missing">No task results in eval/.</p>{% endif %}
<h3>Best and worst classes, frequent confusions</h3>
{% if evaluation.classes %}{% for task, c in evaluation.classes.items() %}<h4>{{ task }}</h4>
<table><tr><th>best classes</th><th class="n">recall</th><th>worst classes</th><th class="n">recall</th></tr>
{% for i in range([c.best|length, c.worst|length]|max) %}<tr>{% if i < c.best|length %}<td>{{ c.best[i].name }}</td><td class="n">{{ fmt(c.best[i].recall) }}</td>{% else %}<td></td><td></td>{% endif %}{% if i < c.worst|length %}<td>{{ c.worst[i].name }}</td><td class="n">{{ fmt(c.worst[i].recall) }}</td>{% else %}<td></td><td></td>{% endif %}</tr>{% endfor %}</table>
<table><tr><th>true</th><th>predicted</th><th class="n">images</th></tr>{% for x in c.confusions %}<tr>
<td>{% if thumbs.get(x.true) %}<img src="{{ thumbs[x.true] }}" width="64" alt="{{ x.true_name }}"> {% endif %}{{ x.true_name }}</td>
<td>{% if thumbs.get(x.predicted) %}<img src="{{ thumbs[x.predicted] }}" width="64" alt="{{ x.predicted_name }}"> {% endif %}{{ x.predicted_name }}</td><td class="n">{{ x.count }}</td></tr>{% endfor %}</table>
{% endfor %}{% else %}<p class="missing">Not recorded: this run's eval stage did not write per-class results (eval/classes.json).</p>{% endif %}
{% else %}<p class="missing">No evaluation in this run: the eval stage has not run.</p>{% endif %}
</main></body></html>
"""


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value else f"{value:.3f}"
    return str(value)


def render(context: dict[str, Any]) -> str:
    environment = jinja2.Environment(autoescape=True)
    return environment.from_string(TEMPLATE).render(style=STYLE, fmt=fmt, **context)
