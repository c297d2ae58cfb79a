/* Swagger UI's own dark theme (its rules under html.dark-mode) whenever the system is set to dark,
   following a change while the page is open. Loaded in the head, so the page never flashes light. */
(function () {
  "use strict";
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  function follow() { document.documentElement.classList.toggle("dark-mode", dark.matches); }
  follow();
  dark.addEventListener("change", follow);
})();
