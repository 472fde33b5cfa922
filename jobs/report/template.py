"""The report page: one Jinja2 template, inline CSS, nothing fetched (images arrive as data: URIs)."""

# what the page may load, as the browser enforces it: its inline <style> and data: images, nothing else (no script,
# font or fetch: a key or error message that slipped past escaping could run or phone home with nothing)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp|safe }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="deepfakestream {{ version }}">
<title>DeepfakeStream report — {{ d.output }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f3b57;margin:0;background:#f5f7fa}
main{max-width:1040px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dee6;padding-bottom:4px}
.meta{color:#5c6b7a;font-size:12px} .cards{display:flex;gap:10px;flex-wrap:wrap;margin:14px 0}
.card{background:#fff;border:1px solid #d8dee6;border-radius:6px;padding:8px 14px;min-width:92px}
.card b{display:block;font-size:20px} .card span{font-size:11px;color:#5c6b7a;text-transform:uppercase}
.banner{border-radius:6px;padding:10px 14px;margin:12px 0;font-weight:600}
.banner.drift{background:#fdecea;border:1px solid #c0392b;color:#8e2418}
.banner.ok{background:#eaf6ee;border:1px solid #2e8b57;color:#1d5e3a}
.banner.insufficient{background:#fff8e1;border:1px solid #d4a017;color:#6b5200}
table{border-collapse:collapse;background:#fff;width:100%;font-size:12px}
.scroll{overflow-x:auto;margin:6px 0} /* a table wider than the screen scrolls by itself, the page does not */
caption{caption-side:top;text-align:left;color:#5c6b7a;font-size:12px;padding:0 0 3px}
th,td{border:1px solid #e1e6ec;padding:4px 7px;text-align:left;vertical-align:top}
thead th{background:#eef2f6} tbody th{font-weight:400} td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
img.plot{max-width:100%;height:auto;background:#fff;border:1px solid #d8dee6;border-radius:4px}
figure{margin:0} figcaption.note ul{margin:2px 0;padding-left:18px}
details{margin:4px 0} summary{color:#5c6b7a;font-size:12px;cursor:pointer}
.suspect{display:grid;grid-template-columns:1fr 420px;gap:12px;background:#fff;border:1px solid #d8dee6;
 border-radius:6px;padding:10px 12px;margin:10px 0}
@media (max-width:700px){ /* a phone, or a desktop zoomed to 200-400%: one column, plots as wide as the screen */
 main{padding:12px 10px 32px} .suspect{grid-template-columns:1fr}}
.suspect h3{margin:0 0 4px;font-size:14px;word-break:break-all}
.thumbs{display:flex;gap:6px;flex-wrap:wrap;margin-top:8px}
.thumbs figure{margin:0;text-align:center;font-size:11px} .thumbs img{width:64px;height:64px;object-fit:contain;
 border:1px solid #d8dee6;background:#000;image-rendering:auto}
.label{font-weight:700;padding:0 5px;border-radius:3px} .FAKE{background:#fdecea;color:#8e2418}
.REAL{background:#eaf6ee;color:#1d5e3a} .note{color:#5c6b7a;font-size:12px}
.flag{display:inline-block;background:#c0392b;color:#fff;border-radius:3px;padding:0 6px;margin-right:4px;font-size:12px}
</style></head>
<body><main>
<h1>DeepfakeStream scan report</h1>
<div class="meta">{{ d.output }} · generated {{ generated }} · deepfakestream {{ version }} ·
 model{{ 's' if d.model_versions|length > 1 }} {{ d.model_versions|join(', ') or 'none' }}</div>

<div class="cards">
 <div class="card"><b>{{ d.totals.objects }}</b><span>objects</span></div>
 <div class="card"><b>{{ d.totals.fakes }}</b><span>fake</span></div>
 <div class="card"><b>{{ d.totals.reals }}</b><span>real</span></div>
 <div class="card"><b>{{ d.totals.no_face }}</b><span>no face</span></div>
 <div class="card"><b>{{ d.totals.errors }}</b><span>errors</span></div>
 <div class="card"><b>{{ d.runs|length + d.more_runs }}</b><span>runs, {{ window }} days</span></div>
</div>

<div class="banner {{ d.drift.status }}" id="drift-status" data-status="{{ d.drift.status }}">
{% if d.drift.flagged %}DRIFT: {% for f in d.drift.flags %}<span class="flag">{{ f }}</span>{% endfor %}{% elif d.drift.status == 'ok' %}No drift:{% else %}Drift not judged:{% endif %}
 {{ d.drift.message }}</div>

<h2>Runs over time</h2>
<p class="note" id="window">The last {{ window }} days{% if d.since %} (since {{ d.since }}){% endif %}: runs here, scan days
in the plots below; the <code>runs</code> view of <code>deepfakestream query</code> holds every run.</p>
{% if plots.runs %}<img class="plot" alt="{{ alts.runs }}" src="{{ plots.runs }}">{% endif %}
<div class="scroll" role="region" tabindex="0" aria-labelledby="runs-caption"><table id="runs">
<caption id="runs-caption">Runs of the last {{ window }} days, newest first</caption>
<thead><tr><th scope="col">scan</th><th scope="col">status</th><th scope="col">exit</th><th scope="col">started (UTC)</th>
<th scope="col">took</th><th scope="col">scanned</th><th scope="col">skipped</th><th scope="col">deleted</th>
<th scope="col">fake</th><th scope="col">real</th>
<th scope="col">no face</th><th scope="col">errors</th><th scope="col">error rate</th><th scope="col">model</th></tr></thead><tbody>
{% for r in d.runs|reverse %}<tr><th scope="row">{{ r.scan_id }}</th><td>{{ r.status }}</td><td class="n">{{ '—' if r.exit_code is none else r.exit_code }}</td>
<td>{{ r.started_at.strftime('%Y-%m-%d %H:%M:%S') if r.started_at }}</td><td class="n">{{ '%.0f s'|format(r.elapsed_s) if r.elapsed_s is not none }}</td>
<td class="n">{{ r.scanned }}</td><td class="n">{{ r.skipped }}</td><td class="n">{{ r.deleted }}</td><td class="n">{{ r.fakes }}</td><td class="n">{{ r.reals }}</td>
<td class="n">{{ r.no_face }}</td><td class="n">{{ r.failed }}</td><td class="n">{{ pct(r.error_rate) }}</td><td>{{ r.model_version }}</td></tr>
{% else %}<tr><td colspan="14">no run records</td></tr>{% endfor %}
{% if d.more_runs %}<tr id="more-runs"><td colspan="14" class="note">the latest {{ d.runs|length }} runs here and in the plot;
{{ d.more_runs }} earlier runs of these {{ window }} days left out: query the <code>runs</code> view</td></tr>{% endif %}
</tbody></table></div>

<h2>Fake rate per day and per prefix</h2>
{% if plots.fake_rate %}<img class="plot" alt="{{ alts.fake_rate }}" src="{{ plots.fake_rate }}">{% endif %}
<div class="scroll" role="region" tabindex="0" aria-labelledby="prefixes-caption"><table id="prefixes">
<caption id="prefixes-caption">Current verdicts per prefix: the {{ top_prefixes }} with the most fakes</caption>
<thead><tr><th scope="col">prefix</th><th scope="col">objects</th><th scope="col">fake</th><th scope="col">real</th>
<th scope="col">no face / error</th><th scope="col">fake rate</th></tr></thead><tbody>
{% for p in d.prefixes %}<tr><th scope="row">{{ p.prefix }}</th><td class="n">{{ p.objects }}</td><td class="n">{{ p.fakes }}</td>
<td class="n">{{ p.reals }}</td><td class="n">{{ p.no_face + p.errors }}</td><td class="n">{{ pct(p.fake_rate) }}</td></tr>
{% else %}<tr><td colspan="6">no current verdicts</td></tr>{% endfor %}
{% if d.more_prefixes %}<tr id="more-prefixes"><td colspan="6" class="note">{{ d.more_prefixes }} more prefixes: use
<code>deepfakestream query</code> (docs/report.md)</td></tr>{% endif %}
</tbody></table></div>

<h2>Errors</h2>
<div class="scroll" role="region" tabindex="0" aria-labelledby="errors-caption"><table id="errors">
<caption id="errors-caption">Current ERROR verdicts per error code</caption>
<thead><tr><th scope="col">error code</th><th scope="col">objects</th><th scope="col">example message</th></tr></thead><tbody>
{% for e in d.errors %}<tr><th scope="row">{{ e.error_code }}</th><td class="n">{{ e.objects }}</td><td>{{ e.example }}</td></tr>
{% else %}<tr><td colspan="3">no ERROR verdicts</td></tr>{% endfor %}</tbody></table></div>

<h2>Score distributions per day</h2>
{% if plots.scores %}<img class="plot" alt="{{ alts.scores }}" src="{{ plots.scores }}">
<details><summary>each day in numbers</summary><div class="scroll" role="region" tabindex="0" aria-labelledby="score-days-caption">
<table id="score-days"><caption id="score-days-caption">Object scores per scan day</caption>
<thead><tr><th scope="col">scan day</th><th scope="col">scored objects</th><th scope="col">lower quartile</th>
<th scope="col">median</th><th scope="col">upper quartile</th></tr></thead><tbody>
{% for s in d.score_days %}<tr><th scope="row">{{ s.day }}</th><td class="n">{{ s.n }}</td><td class="n">{{ num(s.q1) }}</td>
<td class="n">{{ num(s.med) }}</td><td class="n">{{ num(s.q3) }}</td></tr>{% endfor %}</tbody></table></div></details>
{% else %}<p class="note">no scored objects</p>{% endif %}

<h2>Drift of the latest scan</h2>
{% if plots.drift %}<img class="plot" alt="{{ alts.drift }}" src="{{ plots.drift }}">
<details><summary>each score bin in numbers</summary><div class="scroll" role="region" tabindex="0" aria-labelledby="drift-bins-caption">
<table id="drift-bins"><caption id="drift-bins-caption">Share of objects per score bin</caption>
<thead><tr><th scope="col">score</th><th scope="col">trailing scans</th><th scope="col">latest scan</th></tr></thead><tbody>
{% for bin, trailing, latest in drift_bins %}<tr><th scope="row">{{ bin }}</th><td class="n">{{ trailing }}</td>
<td class="n">{{ latest }}</td></tr>{% endfor %}</tbody></table></div></details>{% endif %}
<div class="scroll" role="region" tabindex="0" aria-labelledby="drift-caption"><table id="drift">
<caption id="drift-caption">The latest scan against the trailing scans it is compared with</caption>
<thead><tr><th scope="col">scans</th><th scope="col">scan ids</th><th scope="col">objects</th><th scope="col">scored</th>
<th scope="col">mean score</th><th scope="col">faces per object</th><th scope="col">error rate</th><th scope="col">model</th></tr></thead><tbody>
{% for name, s in (('trailing', d.drift.reference), ('latest', d.drift.latest)) %}<tr><th scope="row">{{ name }}</th>
<td>{{ s.scan_ids|join(', ') or '—' }}</td><td class="n">{{ s.objects }}</td><td class="n">{{ s.scores|length }}</td>
<td class="n">{{ num(s.mean_score) }}</td><td class="n">{{ num(s.faces_per_object, 2) }}</td><td class="n">{{ pct(s.error_rate) }}</td>
<td>{{ s.model_versions|join(', ') }}</td></tr>{% endfor %}</tbody></table></div>
<p class="note">PSI (population stability index) of the latest scan's object scores against the pooled trailing scans,
10 equal bins over [0, 1]: under 0.1 stable, over {{ '%.3g'|format(d.drift.psi_threshold) }} flagged (the 0.25 rule of
thumb, or the level chance reaches at these sample sizes where that is higher). Score and face-count shifts are judged
only with at least {{ d.drift.min_objects }} objects on each side; every flag also needs the move to be unlikely by
chance (p &lt; {{ d.drift.alpha }}).</p>

<h2>Most suspicious objects</h2>
{% if not d.has_thumbs %}<p class="note" id="no-thumbs">This output stores no face thumbnails for these verdicts (no
<code>faces.thumb_jpeg</code> is set: an older scan, or thumbnails switched off).</p>{% endif %}
{% for s in suspects %}<div class="suspect">
<div><h3>{{ s.uri }}</h3>
<span class="label {{ s.label }}">{{ s.label }}</span> score <b>{{ '%.3f'|format(s.score) }}</b> ·
{{ s.faces }} face{{ 's' if s.faces != 1 }}, {{ s.tracks }} person{{ 's' if s.tracks != 1 }} · scanned {{ s.day }} · {{ s.model_version }}
{% if s.thumbs %}<div class="thumbs">{% for alt, score, uri in s.thumbs %}<figure><img alt="{{ alt }}" src="{{ uri }}">
<figcaption>{{ '%.2f'|format(score) }}</figcaption></figure>{% endfor %}</div>{% endif %}
</div>
<div>{% if s.timeline %}<figure><img class="plot" alt="{{ s.alt }}" src="{{ s.timeline }}">
{% if s.people|length > 1 %}<figcaption class="note"><ul>{% for line in s.people %}<li>{{ line }}</li>{% endfor %}</ul></figcaption>{% endif %}</figure>
{% endif %}</div>
</div>{% else %}<p class="note">no scored objects</p>{% endfor %}
</main></body></html>
"""
