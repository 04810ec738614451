import { render } from "preact";
import { App } from "./App";
import { hub } from "./live";
import "./styles.css";
import "./theme";

hub.start();
render(<App />, document.getElementById("root") as HTMLElement);
