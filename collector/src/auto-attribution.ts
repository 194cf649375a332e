// The script-tag bundle of the attribution mode (dist/rum.attribution.iife.js).

import { scriptOptions } from './script-tag';
import { init } from './with-attribution';

const options = scriptOptions(document.currentScript as HTMLScriptElement | null);
if (options) init(options);
