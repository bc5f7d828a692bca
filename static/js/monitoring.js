// Draw every chart's figure from the JSON beside it, on load and whenever htmx swaps charts in.
(function () {
  "use strict";
  var config = { responsive: true, displaylogo: false };

  function draw(root) {
    var blocks = root.querySelectorAll ? root.querySelectorAll("script[data-plotly-figure]") : [];
    Array.prototype.forEach.call(blocks, function (block) {
      var target = block.parentNode.querySelector("[data-plotly-target]");
      if (!target) {
        return;
      }
      var figure = JSON.parse(block.textContent);
      window.Plotly.react(target, figure.data, figure.layout, config);
    });
  }

  htmx.onLoad(draw);
})();
