// Builds the single-page app into the Python package, where the server serves it from
// (`/` and `/assets/*`). The output directory is emptied first so that stale hashed assets
// never pile up in the wheel.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  build: {
    outDir: fileURLToPath(new URL("../pulseboard/static", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
    // Everything the first dashboard needs is small; no inline data URLs for fonts etc.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: true,
  },
  server: {
    // `npm run dev` talks to a local `pulseboard demo` for the API and the live stream.
    proxy: {
      "/v1": { target: "http://127.0.0.1:8765", ws: true },
      "/healthz": "http://127.0.0.1:8765",
    },
  },
});
