// The script-tag bundle (dist/rum.iife.js): its settings are the tag's data attributes (script-tag.ts).

import { init } from './index';
import { scriptOptions } from './script-tag';

const options = scriptOptions(document.currentScript as HTMLScriptElement | null);
if (options) init(options);
