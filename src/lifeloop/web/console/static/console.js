// The console's only script: draws charts from metric JSON embedded in the page, and makes every htmx
// request carry the session's CSRF token. Charts come from the analytics API's own chart description
// ({type, x, series} | heatmap | sankey | pie | stacked_area), so page and API draw the same thing.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  function column(result, name) {
    var i = result.columns.indexOf(name);
    return result.data.map(function (row) { return row[i]; });
  }

  function cartesian(result, chart, labels) {
    var x = column(result, chart.x);
    var kind = chart.type === "bar" ? "bar" : "line";
    return {
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 48, right: 16, top: 32, bottom: 32 },
      xAxis: { type: "category", data: x },
      yAxis: { type: "value" },
      series: chart.series.map(function (name) {
        return { name: labels[name] || name, type: kind, data: column(result, name), showSymbol: false };
      }),
    };
  }

  function stackedArea(result, chart, labels) {
    var days = [], groups = [], values = {};
    result.data.forEach(function (row) {
      var x = row[result.columns.indexOf(chart.x)], g = row[result.columns.indexOf(chart.group)];
      if (days.indexOf(x) < 0) days.push(x);
      if (groups.indexOf(g) < 0) groups.push(g);
      values[g + "\u0000" + x] = row[result.columns.indexOf(chart.value)];
    });
    return {
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 48, right: 16, top: 32, bottom: 32 },
      xAxis: { type: "category", data: days },
      yAxis: { type: "value" },
      series: groups.map(function (g) {
        return {
          name: labels[g] || g, type: "line", stack: "all", areaStyle: {}, showSymbol: false,
          data: days.map(function (d) { return values[g + "\u0000" + d] || 0; }),
        };
      }),
    };
  }

  function heatmap(result, chart) {
    var xs = [], ys = [], cells = [];
    result.data.forEach(function (row) {
      var x = row[result.columns.indexOf(chart.x)], y = row[result.columns.indexOf(chart.y)];
      if (xs.indexOf(x) < 0) xs.push(x);
      if (ys.indexOf(y) < 0) ys.push(y);
    });
    result.data.forEach(function (row) {
      var v = row[result.columns.indexOf(chart.value)];
      cells.push([xs.indexOf(row[result.columns.indexOf(chart.x)]), ys.indexOf(row[result.columns.indexOf(chart.y)]),
                  v === null ? null : Math.round(v * 1000) / 10]);
    });
    return {
      tooltip: { formatter: function (p) { return ys[p.value[1]] + " · " + xs[p.value[0]] + ": " + p.value[2] + "%"; } },
      grid: { left: 96, right: 16, top: 8, bottom: 56 },
      xAxis: { type: "category", data: xs },
      yAxis: { type: "category", data: ys, inverse: true },
      visualMap: { min: 0, max: 100, orient: "horizontal", left: "center", bottom: 0, calculable: true },
      series: [{ type: "heatmap", data: cells, label: { show: ys.length <= 12 } }],
    };
  }

  function sankey(chart, labels) {
    function label(name) {
      // Nodes are made unique by a prefix: "from:"/"to:" (stage flows) or "<step>:" (paths).
      var stage = name.replace(/^(from|to):/, "").replace(/^\d+:/, "");
      return labels[stage] || stage;
    }
    return {
      tooltip: { trigger: "item" },
      series: [{
        type: "sankey", emphasis: { focus: "adjacency" }, nodeGap: 10,
        data: chart.nodes.map(function (n) { return { name: n.name }; }),
        links: chart.links,
        label: { formatter: function (p) { return label(p.name); } },
      }],
    };
  }

  function pie(result, chart, labels) {
    return {
      tooltip: { trigger: "item" },
      legend: { type: "scroll", bottom: 0 },
      series: [{
        type: "pie", radius: ["40%", "70%"],
        data: result.data.map(function (row) {
          var name = row[result.columns.indexOf(chart.name)];
          return { name: labels[name] || name, value: row[result.columns.indexOf(chart.value)] };
        }),
      }],
    };
  }

  function option(result, labels) {
    var chart = result.chart || {};
    switch (chart.type) {
      case "line": case "bar": return cartesian(result, chart, labels);
      case "stacked_area": return stackedArea(result, chart, labels);
      case "heatmap": return heatmap(result, chart);
      case "sankey": return sankey(chart, labels);
      case "pie": return pie(result, chart, labels);
      default: return null;
    }
  }

  function draw(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) return;
      var source = document.getElementById(el.dataset.chart);
      if (!source || typeof echarts === "undefined") return;
      var payload = JSON.parse(source.textContent);
      var opt = option(payload.result, payload.labels || {});
      if (!opt) return;
      var instance = echarts.init(el, null, { renderer: "canvas" });
      instance.setOption(opt);
      el.dataset.drawn = "1";
      el.dataset.series = String((opt.series || []).length);
      window.addEventListener("resize", function () { instance.resize(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
  window.lifeloopDraw = draw;
})();
