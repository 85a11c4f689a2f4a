// SPDX-License-Identifier: MIT
// plot_trainer_state: draws the curves of a trainer_state.json as an SVG figure, one panel per quantity.
//
//   plot_trainer_state <trainer_state.json> <out.svg>
//
// Panels, all over the global step: the training loss with every evaluation loss, the learning rate, then one
// panel per evaluation metric (eval_accuracy, ...). Each series is one <path> with data-series="<log key>", so
// scripts can find it. A missing or malformed file ends the program with status 2 and a one-line reason.
#include <torchtrain/trainer_state.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <iostream>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tt = torchtrain;

namespace {

struct Point {
  double step, value;
};

struct Series {
  std::string key;    // the log key, e.g. eval_loss
  std::string label;  // what the legend says
  std::string color;
  bool markers;       // evaluations are few: each one gets a dot
  std::vector<Point> points;
};

struct Panel {
  std::string title, y_label;
  std::vector<Series> series;
};

// Timing figures of an evaluation are not metrics of the model.
bool is_timing(const std::string& key) {
  for (const char* suffix : {"_runtime", "_samples_per_second", "_steps_per_second", "_jit_compilation_time",
                             "_model_preparation_time"})
    if (key.size() > std::string(suffix).size() && key.compare(key.size() - std::string(suffix).size(), std::string::npos, suffix) == 0)
      return true;
  return false;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};

std::vector<Panel> panels_of(const tt::TrainerState& state) {
  std::map<std::string, std::vector<Point>> points;  // every numeric key of the history, in step order
  std::vector<std::string> order;
  for (const auto& entry : state.log_history) {
    const double step = static_cast<double>(entry.value("step", std::int64_t{0}));
    for (const auto& [key, value] : entry.items()) {
      if (key == "step" || key == "epoch" || !value.is_number()) continue;
      if (!points.count(key)) order.push_back(key);
      points[key].push_back({step, value.get<double>()});
    }
  }
  const auto series = [&](const std::string& key, std::string label, std::size_t color, bool markers) {
    return Series{key, std::move(label), kColors[color % std::size(kColors)], markers, points[key]};
  };

  std::vector<Panel> panels;
  Panel loss{"Loss", "loss", {}};
  if (points.count("loss")) loss.series.push_back(series("loss", "train loss", 0, false));
  for (const auto& key : order)
    if (key.rfind("eval_", 0) == 0 && key.size() >= 4 && key.compare(key.size() - 4, 4, "loss") == 0)
      loss.series.push_back(series(key, key == "eval_loss" ? "eval loss" : key, loss.series.size(), true));
  if (!loss.series.empty()) panels.push_back(loss);
  if (points.count("learning_rate"))
    panels.push_back({"Learning rate", "learning rate", {series("learning_rate", "learning rate", 2, false)}});
  std::size_t color = 3;
  for (const auto& key : order) {
    if (key.rfind("eval_", 0) != 0 || is_timing(key) || key.compare(key.size() - 4, 4, "loss") == 0) continue;
    const std::string name = key.substr(5);
    panels.push_back({"Evaluation " + name, name, {series(key, "eval " + name, color++, true)}});
  }
  return panels;
}

// About `count` round tick values (1, 2 or 5 times a power of ten) covering [low, high].
std::vector<double> ticks(double low, double high, int count) {
  const double raw = (high - low) / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * magnitude) {
      step = m * magnitude;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(low / step - 1e-9) * step; t <= high + step * 1e-9; t += step)
    out.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return out;
}

std::string number(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", value);
  return buf;
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string svg(const std::vector<Panel>& panels, const tt::TrainerState& state, const std::string& source) {
  constexpr double width = 860, panel_height = 240, top = 64, gap = 70, left = 92, right = 190;
  const double plot_width = width - left - right, plot_height = panel_height - 40;
  const double height = top + static_cast<double>(panels.size()) * (panel_height + gap) - gap + 56;

  double max_step = 1;
  for (const auto& panel : panels)
    for (const auto& s : panel.series)
      for (const auto& p : s.points) max_step = std::max(max_step, p.step);
  std::vector<double> x_ticks = ticks(0, max_step, 8);
  if (x_ticks.size() > 1 && x_ticks.back() < max_step) x_ticks.push_back(2 * x_ticks.back() - x_ticks[x_ticks.size() - 2]);
  const double x_high = std::max(max_step, x_ticks.back());  // the axis ends on a round step
  const auto x_of = [&](double step) { return left + step / x_high * plot_width; };

  std::string out;
  out += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + number(width) + "\" height=\"" + number(height) +
         "\" viewBox=\"0 0 " + number(width) + " " + number(height) +
         "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::string title = "Training run: " + std::to_string(state.global_step) + " steps";
  if (state.epoch) title += ", " + number(*state.epoch) + " epochs";
  if (state.best_metric) title += ", best metric " + number(*state.best_metric);
  out += "<text x=\"" + number(left) + "\" y=\"28\" font-size=\"17\" font-weight=\"bold\">" + escape(title) +
         "</text>\n";
  out += "<text x=\"" + number(left) + "\" y=\"46\" fill=\"#555\">" + escape(source) + "</text>\n";

  for (std::size_t i = 0; i < panels.size(); ++i) {
    const Panel& panel = panels[i];
    const double y0 = top + static_cast<double>(i) * (panel_height + gap) + 24;  // the plot area's top
    double low = std::numeric_limits<double>::infinity(), high = -low;
    for (const auto& s : panel.series)
      for (const auto& p : s.points)
        if (std::isfinite(p.value)) low = std::min(low, p.value), high = std::max(high, p.value);
    if (!std::isfinite(low)) low = 0, high = 1;
    if (high - low < 1e-12 * std::max(1.0, std::abs(high))) low -= 0.5 * std::max(std::abs(low), 1e-12), high += 0.5 * std::max(std::abs(high), 1e-12);
    const double pad = (high - low) * 0.06;
    std::vector<double> y_ticks = ticks(low - pad, high + pad, 5);
    const double y_low = std::min(low - pad, y_ticks.front()), y_high = std::max(high + pad, y_ticks.back());
    const auto y_of = [&](double v) { return y0 + (y_high - v) / (y_high - y_low) * plot_height; };

    out += "<g class=\"panel\">\n";
    out += "<text x=\"" + number(left) + "\" y=\"" + number(y0 - 8) + "\" font-size=\"14\" font-weight=\"bold\">" +
           escape(panel.title) + "</text>\n";
    for (double t : y_ticks) {
      if (t < y_low || t > y_high) continue;
      const std::string y = number(y_of(t));
      out += "<line x1=\"" + number(left) + "\" x2=\"" + number(left + plot_width) + "\" y1=\"" + y + "\" y2=\"" + y +
             "\" stroke=\"#e5e5e5\"/>\n";
      out += "<text x=\"" + number(left - 8) + "\" y=\"" + y + "\" dy=\"4\" text-anchor=\"end\">" + number(t) +
             "</text>\n";
    }
    for (double t : x_ticks) {
      const std::string x = number(x_of(t));
      out += "<line x1=\"" + x + "\" x2=\"" + x + "\" y1=\"" + number(y0) + "\" y2=\"" + number(y0 + plot_height) +
             "\" stroke=\"#f0f0f0\"/>\n";
      out += "<line x1=\"" + x + "\" x2=\"" + x + "\" y1=\"" + number(y0 + plot_height) + "\" y2=\"" +
             number(y0 + plot_height + 5) + "\" stroke=\"#333\"/>\n";
      out += "<text x=\"" + x + "\" y=\"" + number(y0 + plot_height + 19) + "\" text-anchor=\"middle\">" + number(t) +
             "</text>\n";
    }
    out += "<rect x=\"" + number(left) + "\" y=\"" + number(y0) + "\" width=\"" + number(plot_width) +
           "\" height=\"" + number(plot_height) + "\" fill=\"none\" stroke=\"#333\"/>\n";
    out += "<text x=\"" + number(left + plot_width / 2) + "\" y=\"" + number(y0 + plot_height + 38) +
           "\" text-anchor=\"middle\">global step</text>\n";
    const std::string mid = number(y0 + plot_height / 2);
    out += "<text x=\"22\" y=\"" + mid + "\" text-anchor=\"middle\" transform=\"rotate(-90 22 " + mid + ")\">" +
           escape(panel.y_label) + "</text>\n";

    for (std::size_t k = 0; k < panel.series.size(); ++k) {
      const Series& s = panel.series[k];
      std::string d;
      bool pen_down = false;
      for (const auto& p : s.points) {
        if (!std::isfinite(p.value)) {
          pen_down = false;  // a NaN or infinite loss breaks the line
          continue;
        }
        d += (pen_down ? " L" : (d.empty() ? "M" : " M")) + number(x_of(p.step)) + " " + number(y_of(p.value));
        pen_down = true;
      }
      out += "<path data-series=\"" + escape(s.key) + "\" d=\"" + d + "\" fill=\"none\" stroke=\"" + s.color +
             "\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n";
      if (s.markers || s.points.size() == 1)
        for (const auto& p : s.points)
          if (std::isfinite(p.value))
            out += "<circle cx=\"" + number(x_of(p.step)) + "\" cy=\"" + number(y_of(p.value)) + "\" r=\"3.5\" fill=\"" +
                   s.color + "\"/>\n";
      const double ly = y0 + 14 + static_cast<double>(k) * 20, lx = left + plot_width + 16;
      out += "<line x1=\"" + number(lx) + "\" x2=\"" + number(lx + 24) + "\" y1=\"" + number(ly) + "\" y2=\"" +
             number(ly) + "\" stroke=\"" + s.color + "\" stroke-width=\"2\"/>\n";
      out += "<text x=\"" + number(lx + 30) + "\" y=\"" + number(ly) + "\" dy=\"4\">" + escape(s.label) + "</text>\n";
    }
    out += "</g>\n";
  }
  out += "</svg>\n";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: plot_trainer_state <trainer_state.json> <out.svg>\n";
    return 2;
  }
  try {
    const tt::TrainerState state = tt::TrainerState::load_from_json(argv[1]);
    const auto panels = panels_of(state);
    if (panels.empty())
      throw tt::FileFormatError(std::string(argv[1]) +
                                ": log_history has no loss, learning rate or evaluation metric to plot; train with "
                                "logging on (logging_steps) first");
    std::ofstream out(argv[2], std::ios::binary);
    out << svg(panels, state, argv[1]);
    out.close();
    if (!out) throw tt::Error(std::string(argv[2]) + ": cannot write the file; check the folder exists and is writable");
  } catch (const tt::Error& e) {
    std::cerr << "plot_trainer_state: error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
